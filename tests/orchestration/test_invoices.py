"""Every invoice document equals an independent recomputation from the raw Parquet log, the catalog and the
metadata store (Python from the rules in chatmeter/billing.py's docstring; no SQL reused)."""

import json
import os
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

import pyarrow.parquet as pq

from chatmeter import billing
from chatmeter.catalog import SHIPPED_CATALOG, load_catalog
from chatmeter.settings import Settings
from chatmeter.store import Store
from chatmeter.windows import billing_month
from orchestration.defs.invoices.documents import invoice_files, write_if_changed
from tests.orchestration.factories import AS_OF

CENT = Decimal("0.01")


def r(x: Decimal) -> Decimal:
    return Decimal(x).quantize(CENT, rounding=ROUND_HALF_EVEN)


def raw_events(settings: Settings) -> list[dict]:
    seen, out = set(), []
    for path in sorted(settings.events_dir.glob("*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row["event_id"] not in seen:
                seen.add(row["event_id"])
                out.append(row)
    return out


def meters(e: dict) -> dict[str, Decimal]:
    if e["status"] == "rejected":
        return {}
    out = {}
    if e["kind"] == "chat" and e["input_tokens"] + e["output_tokens"] > 0:
        out["tokens"] = Decimal(e["input_tokens"] + e["output_tokens"])
        out["requests"] = Decimal(1)
    if e["kind"] == "embedding":
        out["embedding_tokens"] = Decimal(e["embedding_tokens"] or 0)
    out["credits"] = Decimal(e["credits"] or 0)
    return out


def recompute(settings: Settings, as_of: datetime) -> dict[str, dict]:
    catalog = load_catalog(SHIPPED_CATALOG)
    store = Store(settings.metadata_url)
    events = raw_events(settings)
    invoices = {}
    for tenant in store.list_tenants():
        assignments = store.plan_assignments(tenant.tenant_id)
        mine = [e for e in events if e["tenant_id"] == tenant.tenant_id]

        def plan_at(t, assignments=assignments):
            current = [a for a in assignments if a.effective_from <= t]
            return (current[-1] if current else assignments[0]).plan

        first = min([tenant.created_at, assignments[0].effective_from] + [e["occurred_at"] for e in mine])
        period = billing_month(first, tenant.anchor_day)
        docs = []
        while period.start <= as_of:
            seconds = int((period.end - period.start).total_seconds())
            cuts = [period.start] + [
                a.effective_from for a in assignments if period.start < a.effective_from < period.end
            ]
            segments = []
            for cut in sorted(cuts):
                plan = plan_at(cut)
                if not segments or segments[-1][1] != plan:
                    segments.append([cut, plan])
            lines = []
            for i, (start, plan_id) in enumerate(segments):
                end = segments[i + 1][0] if i + 1 < len(segments) else period.end
                plan = catalog.plans[plan_id]
                if len(segments) == 1:
                    lines.append(("plan_fee", r(plan.monthly_fee)))
                else:
                    share = int((end - start).total_seconds())
                    lines.append(("proration", r(plan.monthly_fee * share / seconds)))
                used: dict[str, Decimal] = {}
                cost = Decimal(0)
                for e in mine:
                    if start <= e["occurred_at"] < end:
                        for m, q in meters(e).items():
                            used[m] = used.get(m, Decimal(0)) + q
                        if e["status"] != "rejected":
                            cost += Decimal(e["provider_cost_usd"] or 0)
                for overage in plan.overage:
                    limit = plan.month_limit(overage.meter)
                    q = max(Decimal(0), used.get(overage.meter, Decimal(0)) - (limit.included if limit else 0))
                    if q > 0:
                        lines.append(("overage", r(billing.overage_amount(overage, q))))
                if plan.pricing == "cost_plus" and cost > 0:
                    lines.append(("overage", r(cost * catalog.margin)))
            for topup in store.topups(tenant.tenant_id):
                if period.start <= topup.granted_at < period.end:
                    lines.append(("topup", r(topup.amount)))
            docs.append({"period": period, "lines": lines, "subtotal": sum((a for _, a in lines), Decimal(0))})
            period = billing_month(period.end, tenant.anchor_day)
        grants = [
            billing.Grant(g.grant_id, r(g.amount), g.granted_at, g.expires_at, g.priority)
            for g in store.credit_grants(tenant.tenant_id)
        ]
        taken = billing.allocate_credits(grants, [(d["period"].end, d["subtotal"]) for d in docs])
        for doc, used_grants in zip(docs, taken, strict=True):
            credits = sum(used_grants.values(), Decimal(0))
            doc["lines"] += [("credit", -r(v)) for v in used_grants.values()]
            doc["credits"] = credits
            doc["total"] = doc["subtotal"] - credits
            invoices[f"{tenant.tenant_id}/{doc['period'].start:%Y-%m}"] = doc
    store.engine.dispose()
    return invoices


def test_invoice_documents_equal_independent_recomputation(built):
    settings, _ = built
    expected = recompute(settings, AS_OF)
    files = sorted(settings.invoices_dir.glob("*/*.json"))
    assert len(files) == len(expected) == 8
    for path in files:
        doc = json.loads(path.read_text())
        want = expected[f"{doc['tenant_id']}/{path.parent.name}"]
        assert doc["period_start"] == want["period"].start.isoformat().replace("+00:00", "Z")
        assert sorted((line["kind"], Decimal(line["amount"])) for line in doc["lines"]) == sorted(want["lines"])
        assert Decimal(doc["subtotal"]) == want["subtotal"]
        assert Decimal(doc["credits_applied"]) == want["credits"]
        assert Decimal(doc["total"]) == want["total"]
        assert Decimal(doc["total"]) == sum(Decimal(line["amount"]) for line in doc["lines"])
        for line in doc["lines"]:
            assert Decimal(line["amount"]) == Decimal(line["amount"]).quantize(CENT)
        assert path.with_suffix(".html").exists()


def test_invoice_contents(built):
    settings, info = built
    docs = {(p.parent.name, p.stem): json.loads(p.read_text()) for p in settings.invoices_dir.glob("*/*.json")}
    # The mid-month upgrade prorates both plans by seconds, and the top-up bought in October is billed.
    upgraded = docs[("2026-10", info["pro"])]
    assert [line["kind"] for line in upgraded["lines"]] == ["proration", "proration", "topup"]
    assert upgraded["status"] == "finalized" and upgraded["plan"] == "team"
    # Credits: the promo grant (priority 0) pays before the welcome one.
    team = docs[("2026-10", info["team"])]
    assert Decimal(team["credits_applied"]) > 0 and Decimal(team["total"]) == 0
    assert team["status"] == "paid"  # nothing to collect
    assert "promo" in [line for line in team["lines"] if line["kind"] == "credit"][0]["description"]
    # The billing month in progress is a draft.
    assert docs[("2026-11", info["team"])]["status"] == "draft"
    # Cost-plus bills provider cost times the margin.
    payg = docs[("2026-10", info["payg"])]
    assert any(line["kind"] == "overage" and line["unit_price"] == "1.5" for line in payg["lines"])


def test_unchanged_invoice_documents_are_not_rewritten(tmp_path):
    doc = {
        "invoice_id": "inv_t_2026-11",
        "tenant_id": "t",
        "plan": "pro",
        "period": "2026-11",
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-12-01T00:00:00Z",
        "currency": "USD",
        "status": "draft",
        "lines": [],
        "subtotal": "9.99",
        "credits_applied": "0.00",
        "total": "9.99",
    }
    files = invoice_files(tmp_path, doc)
    path = files[0][0]
    write_if_changed(files)
    os.utime(path, ns=(1, 1))
    write_if_changed(invoice_files(tmp_path, doc))
    assert path.stat().st_mtime_ns == 1  # the same bytes: left alone
    write_if_changed(invoice_files(tmp_path, {**doc, "total": "10.99"}))
    assert json.loads(path.read_text())["total"] == "10.99"


def file_states(settings: Settings) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(settings.invoices_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in settings.invoices_dir.glob("*/*.*")
    }


def test_invoice_documents_rewrite_only_what_changed(built_copy, monkeypatch):
    """A run over unchanged invoices renders and writes nothing; one changed invoice row, tenant name or file is
    rewritten alone; invoice states follow the rows."""
    import dagster as dg
    import duckdb
    from sqlalchemy import select

    from chatmeter import store as st
    from orchestration.defs.invoices import assets
    from orchestration.defs.invoices.assets import invoice_documents
    from tests.orchestration.helpers import asset_metadata, resources

    settings, info = built_copy
    res = resources(settings)
    rendered = []
    render = assets.invoice_document
    monkeypatch.setattr(
        assets, "invoice_document", lambda i, lines: rendered.append(i["invoice_id"]) or render(i, lines)
    )

    def run() -> dict:
        result = dg.materialize([invoice_documents], resources=res)
        assert result.success
        return asset_metadata(result, "invoice_documents")

    first = run()
    before = file_states(settings)
    docs_before = {name: (settings.invoices_dir / name).read_bytes() for name in before}
    assert len(before) == 16
    rendered.clear()
    again = run()
    assert file_states(settings) == before and rendered == []
    assert again == first and again["states_changed"] == 0

    # A draft's total moves in the warehouse: its JSON and HTML are rewritten, its state updated, nothing else.
    draft = f"2026-11/{info['pro']}"
    con = duckdb.connect(str(settings.warehouse_path))
    con.execute("update invoices set total = total + 1 where invoice_id = ?", [f"inv_{info['pro']}_2026-11"])
    con.close()
    meta = run()
    after = file_states(settings)
    assert {n for n in before if after[n] != before[n]} == {f"{draft}.json", f"{draft}.html"}
    assert rendered == [f"inv_{info['pro']}_2026-11"]
    doc = json.loads((settings.invoices_dir / f"{draft}.json").read_text())
    assert Decimal(doc["total"]) == Decimal(json.loads(docs_before[f"{draft}.json"])["total"]) + 1
    assert meta["states_changed"] == 1
    store = Store(settings.metadata_url)
    with store.engine.connect() as c:
        state = c.execute(select(st.invoice_states).where(st.invoice_states.c.invoice_id == doc["invoice_id"])).one()
    assert state.total == Decimal(doc["total"]) and state.status == "draft"

    # A tenant renamed: only its HTML renderings change (the JSON holds no name).
    before = after
    store.update_tenant(info["team"], name="Team & Sons")
    store.engine.dispose()
    run()
    after = file_states(settings)
    changed = {n for n in before if after[n] != before[n]}
    assert changed == {n for n in before if n.endswith(f"{info['team']}.html")} and changed
    assert "Team &amp; Sons" in (settings.invoices_dir / sorted(changed)[0]).read_text()

    # A file damaged or deleted outside the pipeline is put back as it was.
    before = after
    damaged = settings.invoices_dir / f"2026-10/{info['payg']}.json"
    good = damaged.read_bytes()
    damaged.write_text("{}")
    (settings.invoices_dir / f"2026-10/{info['payg']}.html").unlink()
    run()
    assert damaged.read_bytes() == good
    assert (settings.invoices_dir / f"2026-10/{info['payg']}.html").exists()

    # Without its record of what was written, the pipeline compares every document with the disk: no rewrite.
    before = file_states(settings)
    (settings.data_dir / "pipeline" / "invoice_documents.json").unlink()
    run()
    assert file_states(settings) == before
    assert not list(settings.invoices_dir.rglob(".*"))  # no temp file left behind
