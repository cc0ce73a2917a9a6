import json

import stripe
from sqlalchemy import select

from chatmeter import store as st
from orchestration.defs.invoices.definitions import invoice_documents
from orchestration.defs.stripe_sync.assets import stripe_sync
from orchestration.defs.stripe_sync.resources import StripeResource
from orchestration.defs.stripe_sync.sync import sync_invoice
from tests.orchestration.doubles.stripe_api import StripeDouble
from tests.orchestration.helpers import asset_metadata, materialize, resources


def run_sync(settings, double):
    import dagster as dg

    res = resources(settings)
    res["stripe"] = StripeResource(api_key=double.api_key, api_base=double.url)
    return dg.materialize([stripe_sync], resources=res)


def test_stripe_sync_creates_each_invoice_once(built_copy):
    settings, info = built_copy
    with StripeDouble() as double:
        result = run_sync(settings, double)
        assert result.success
        created = asset_metadata(result, "stripe_sync")["created"]
        finalized = [json.loads(p.read_text()) for p in settings.invoices_dir.glob("*/*.json")]
        finalized = [d for d in finalized if d["status"] == "finalized"]
        # Zero-total invoices are paid on finalization: nothing to send.
        assert created == len(finalized) == 3
        assert len(double.objects["customer"]) == 3
        assert len(double.objects["invoice"]) == 3
        for doc in finalized:
            invoice = next(
                i
                for i in double.objects["invoice"].values()
                if i["metadata"]["chatmeter_invoice_id"] == doc["invoice_id"]
            )
            assert invoice["status"] == "open"
            assert invoice["total"] == int(round(float(doc["total"]) * 100))
            assert all(k for _, _, k in double.requests)  # every POST carried an idempotency key
        store = st.Store(settings.metadata_url)
        with store.engine.connect() as con:
            states = {r.invoice_id: r for r in con.execute(select(st.invoice_states))}
        assert all(states[d["invoice_id"]].stripe_invoice_id for d in finalized)
        assert store.get_tenant(info["pro"]).stripe_customer_id
        assert store.get_tenant(info["team"]).stripe_customer_id is None  # its only ended invoice was zero
        store.engine.dispose()

        before = {k: len(v) for k, v in double.objects.items()}
        again = run_sync(settings, double)
        assert again.success and asset_metadata(again, "stripe_sync")["created"] == 0
        assert {k: len(v) for k, v in double.objects.items()} == before


def test_interrupted_sync_resumes_without_duplicates(built_copy):
    """A crash after Stripe created objects but before the id was recorded: the same idempotency keys make
    the retry return the same objects."""
    settings, info = built_copy
    doc = json.loads((settings.invoices_dir / "2026-10" / f"{info['pro']}.json").read_text())
    with StripeDouble() as double:
        client = stripe.StripeClient(double.api_key, base_addresses={"api": double.url})
        first = sync_invoice(client, "cus_x", doc, 14)
        items = len(double.objects["invoiceitem"])
        second = sync_invoice(client, "cus_x", doc, 14)
        assert first == second
        assert len(double.objects["invoice"]) == 1 and len(double.objects["invoiceitem"]) == items


def test_invoice_documents_asset_records_metadata(built_copy):
    settings, _ = built_copy
    result = materialize([invoice_documents], settings)
    assert result.success
    meta = asset_metadata(result, "invoice_documents")
    assert meta["invoices"] == 8
    assert meta["by_status"] == {"finalized": 3, "paid": 1, "draft": 4}
