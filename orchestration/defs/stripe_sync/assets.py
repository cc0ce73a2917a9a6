from datetime import UTC, datetime

import dagster as dg

from chatmeter import store as st
from orchestration.defs.invoices.assets import InvoiceConfig, load_invoices
from orchestration.defs.invoices.documents import invoice_document
from orchestration.defs.stripe_sync.resources import StripeResource
from orchestration.defs.stripe_sync.sync import sync_invoices
from orchestration.resources import ChatmeterResource
from orchestration.warehouse import connect


@dg.asset(
    group_name="stripe",
    deps=["invoice_documents"],
    description="Finalised invoices pushed to Stripe (customer, invoice items, invoice), idempotently.",
    pool="warehouse",
)
def stripe_sync(config: InvoiceConfig, chatmeter: ChatmeterResource, stripe: StripeResource) -> dg.MaterializeResult:
    client = stripe.client()
    if client is None:
        return dg.MaterializeResult(metadata={"skipped": "no STRIPE_API_KEY", "created": 0})
    settings = chatmeter.settings()
    ended_before = datetime.fromisoformat(config.ended_before).astimezone(UTC) if config.ended_before else None
    with connect(settings) as con:
        docs = [invoice_document(i, lines) for i, lines in load_invoices(con, ended_before)]
    store = st.Store(settings.metadata_url)
    try:
        created = sync_invoices(client, store, docs, chatmeter.now(), settings.grace_days)
    finally:
        store.engine.dispose()
    return dg.MaterializeResult(metadata={"created": len(created), "invoices": dg.MetadataValue.json(created)})
