from datetime import UTC, datetime
from decimal import Decimal

import dagster as dg
from sqlalchemy import select

from chatmeter import store as st
from orchestration.defs.invoices.documents import invoice_document, write_invoice
from orchestration.resources import ChatmeterResource
from orchestration.warehouse import connect


class InvoiceConfig(dg.Config):
    """Which invoices to write: every one by default; the monthly schedule passes the first of the month so
    the run bills the billing months that ended before it."""

    ended_before: str | None = None


def load_invoices(con, ended_before: datetime | None = None) -> list[tuple[dict, list[dict]]]:
    invoices = con.sql("select * from invoices order by period_start, tenant_id").to_arrow_table().to_pylist()
    lines = con.sql("select * from invoice_lines order by invoice_id, line_number").to_arrow_table().to_pylist()
    by_invoice: dict[str, list[dict]] = {}
    for line in lines:
        by_invoice.setdefault(line["invoice_id"], []).append(line)
    out = []
    for invoice in invoices:
        if ended_before is not None and invoice["period_end"] > ended_before:
            continue
        out.append((invoice, by_invoice.get(invoice["invoice_id"], [])))
    return out


def record_states(store: st.Store, docs: list[dict], now: datetime) -> int:
    """Keep invoice_states (read by the API for grace periods and by the Stripe sync) in step: insert new
    invoices; move drafts to finalized; never touch paid or payment_failed ones."""
    t = st.invoice_states
    changed = 0
    with store.engine.begin() as con:
        known = {r.invoice_id: r for r in con.execute(select(t))}
        for doc in docs:
            status = doc["status"]
            old = known.get(doc["invoice_id"])
            values = dict(status=status, total=doc["total"], updated_at=now)
            if status != "draft":
                values["finalized_at"] = now
            if old is None:
                con.execute(
                    t.insert().values(
                        invoice_id=doc["invoice_id"], tenant_id=doc["tenant_id"], period=doc["period"], **values
                    )
                )
                changed += 1
            elif old.status == "draft" and (status != "draft" or str(old.total) != doc["total"]):
                con.execute(t.update().where(t.c.invoice_id == doc["invoice_id"]).values(**values))
                changed += 1
    return changed


@dg.asset(
    group_name="invoices",
    deps=["invoices", "invoice_lines"],
    description="Invoice documents (JSON + HTML) under <data_dir>/invoices/<YYYY-MM>/, and invoice states.",
    pool="warehouse",
)
def invoice_documents(config: InvoiceConfig, chatmeter: ChatmeterResource) -> dg.MaterializeResult:
    settings = chatmeter.settings()
    ended_before = datetime.fromisoformat(config.ended_before).astimezone(UTC) if config.ended_before else None
    with connect(settings) as con:
        selected = load_invoices(con, ended_before)
    store = st.Store(settings.metadata_url)
    try:
        names = {t.tenant_id: t.name for t in store.list_tenants()}
        docs = [invoice_document(invoice, lines) for invoice, lines in selected]
        for doc in docs:
            write_invoice(settings.invoices_dir, doc, names.get(doc["tenant_id"]))
        changed = record_states(store, docs, chatmeter.now())
    finally:
        store.engine.dispose()
    totals = {}
    for doc in docs:
        totals[doc["status"]] = totals.get(doc["status"], 0) + 1
    return dg.MaterializeResult(
        metadata={
            "invoices": len(docs),
            "by_status": dg.MetadataValue.json(totals),
            "states_changed": changed,
            "total_billed": str(sum((Decimal(d["total"]) for d in docs if d["status"] != "draft"), Decimal(0))),
            "path": dg.MetadataValue.path(str(settings.invoices_dir)),
        }
    )
