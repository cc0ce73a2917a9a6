from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

import dagster as dg
from sqlalchemy import bindparam, select

from chatmeter import store as st
from orchestration.defs.invoices.documents import (
    RenderedInvoices,
    invoice_document,
    invoice_files,
    money,
    write_if_changed,
)
from orchestration.resources import ChatmeterResource, pipeline_dir
from orchestration.warehouse import connect


class InvoiceConfig(dg.Config):
    """Which invoices to write: every one by default; the monthly schedule passes the first of the month so
    the run bills the billing months that ended before it."""

    ended_before: str | None = None


class InvoiceSummary(NamedTuple):
    invoice_id: str
    tenant_id: str
    period: str
    status: str
    total: str
    digest: int  # of the invoice's row and its lines: changes whenever its document would
    selected: bool  # its billing month ended before `ended_before` (every one when unset)


def load_invoices(
    con, ended_before: datetime | None = None, invoice_ids: list[str] | None = None
) -> list[tuple[dict, list[dict]]]:
    """Invoices (billing months ended before `ended_before`; or these ids) with their lines, by period and
    tenant."""
    where, params = [], []
    if ended_before is not None:
        where.append("period_end <= ?")
        params.append(ended_before)
    if invoice_ids is not None:
        where.append("invoice_id in (select unnest(?::varchar[]))")
        params.append(invoice_ids)
    condition = f"where {' and '.join(where)}" if where else ""
    invoices = con.sql(f"select * from invoices {condition} order by period_start, tenant_id", params=params)
    invoices = invoices.to_arrow_table().to_pylist()
    lines = con.sql(
        "select * from invoice_lines where invoice_id in (select unnest(?::varchar[])) "
        "order by invoice_id, line_number",
        params=[[i["invoice_id"] for i in invoices]],
    )
    by_invoice: dict[str, list[dict]] = {}
    for line in lines.to_arrow_table().to_pylist():
        by_invoice.setdefault(line["invoice_id"], []).append(line)
    return [(invoice, by_invoice.get(invoice["invoice_id"], [])) for invoice in invoices]


def invoice_summaries(con, ended_before: datetime | None = None) -> list[InvoiceSummary]:
    """Every invoice, in DuckDB: what invoice states need, and a digest that tells whether its document changed
    without building it. DuckDB's hash is stable within a version (a new one costs one re-render, no rewrite);
    the lines' hashes combine by xor, each line's including its number."""
    rows = con.execute(
        "with lines as (select invoice_id, bit_xor(hash(l)) as digest from invoice_lines l group by invoice_id) "
        "select i.invoice_id, i.tenant_id, i.period, i.status, i.total, hash(i, lines.digest), "
        "coalesce(i.period_end <= ?, true) "
        "from invoices i left join lines using (invoice_id) order by i.period_start, i.tenant_id",
        [ended_before],
    ).fetchall()
    return [InvoiceSummary(i, t, p, s, money(total), d, sel) for i, t, p, s, total, d, sel in rows]


def tenant_names(store: st.Store) -> dict[str, str]:
    t = st.tenants
    with store.engine.connect() as con:
        return dict(con.execute(select(t.c.tenant_id, t.c.name)).all())


def record_states(store: st.Store, invoices: Iterable[InvoiceSummary], now: datetime) -> int:
    """Keep invoice_states (read by the API for grace periods and by the Stripe sync) in step: insert new
    invoices; move drafts to finalized; never touch paid or payment_failed ones. One statement per kind of
    change, for the changed rows only."""
    t = st.invoice_states
    inserts, updates, finalizes = [], [], []
    with store.engine.begin() as con:
        known = {r.invoice_id: r for r in con.execute(select(t.c.invoice_id, t.c.status, t.c.total))}
        for inv in invoices:
            old = known.get(inv.invoice_id)
            final = inv.status != "draft"
            if old is None:
                inserts.append(
                    dict(
                        invoice_id=inv.invoice_id,
                        tenant_id=inv.tenant_id,
                        period=inv.period,
                        status=inv.status,
                        total=inv.total,
                        updated_at=now,
                        finalized_at=now if final else None,
                    )
                )
            elif old.status == "draft" and (final or str(old.total) != inv.total):
                values = dict(key=inv.invoice_id, status=inv.status, total=inv.total, updated_at=now)
                (finalizes if final else updates).append({**values, "finalized_at": now} if final else values)
        if inserts:
            con.execute(t.insert(), inserts)
        for rows in (updates, finalizes):
            if rows:
                con.execute(t.update().where(t.c.invoice_id == bindparam("key")), rows)
    return len(inserts) + len(updates) + len(finalizes)


@dg.asset(
    group_name="invoices",
    deps=["invoices", "invoice_lines"],
    description="Invoice documents (JSON + HTML) under <data_dir>/invoices/<YYYY-MM>/, and invoice states.",
    pool="warehouse",
)
def invoice_documents(config: InvoiceConfig, chatmeter: ChatmeterResource) -> dg.MaterializeResult:
    settings = chatmeter.settings()
    ended_before = datetime.fromisoformat(config.ended_before).astimezone(UTC) if config.ended_before else None
    store = st.Store(settings.metadata_url)
    try:
        names = tenant_names(store)
        rendered = RenderedInvoices(pipeline_dir(settings) / "invoice_documents.json")
        with connect(settings) as con:
            every = invoice_summaries(con, ended_before)
            selected = [inv for inv in every if inv.selected]
            # Only invoices whose rows, tenant name or files changed since they were last written are rendered.
            stale = {}
            for inv in selected:
                key = [inv.digest, names.get(inv.tenant_id)]
                if not rendered.current(settings.invoices_dir, inv.invoice_id, inv.tenant_id, inv.period, key):
                    stale[inv.invoice_id] = key
            loaded = load_invoices(con, invoice_ids=list(stale)) if stale else []
        docs = [invoice_document(invoice, lines) for invoice, lines in loaded]
        files = [invoice_files(settings.invoices_dir, doc, names.get(doc["tenant_id"])) for doc in docs]
        stats = write_if_changed([file for pair in files for file in pair])
        for doc, ((json_path, _), (html_path, _)) in zip(docs, files, strict=True):
            rendered.record(doc["invoice_id"], stale[doc["invoice_id"]], stats[json_path], stats[html_path])
        rendered.keep_only({inv.invoice_id for inv in every})
        rendered.save()
        changed = record_states(store, selected, chatmeter.now())
    finally:
        store.engine.dispose()
    totals: dict[str, int] = {}
    for inv in selected:
        totals[inv.status] = totals.get(inv.status, 0) + 1
    return dg.MaterializeResult(
        metadata={
            "invoices": len(selected),
            "by_status": dg.MetadataValue.json(totals),
            "states_changed": changed,
            "total_billed": str(sum((Decimal(i.total) for i in selected if i.status != "draft"), Decimal(0))),
            "path": dg.MetadataValue.path(str(settings.invoices_dir)),
        }
    )
