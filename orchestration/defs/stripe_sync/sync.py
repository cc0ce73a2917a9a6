"""Push finalised chatmeter invoices to Stripe: customer, invoice, one invoice item per line, finalize.

Every call carries an idempotency key derived from chatmeter ids, and the Stripe invoice id is recorded in
invoice_states once finalised, so a re-run (even after a crash half-way) creates nothing twice.
"""

import logging
from datetime import datetime
from decimal import Decimal

import stripe
from sqlalchemy import select

from chatmeter import store as st

log = logging.getLogger(__name__)


def cents(amount: str) -> int:
    value = Decimal(amount) * 100
    if value != value.to_integral_value():
        raise ValueError(f"amount {amount} is not whole cents")
    return int(value)


def ensure_customer(client: stripe.StripeClient, store: st.Store, tenant: st.Tenant) -> str:
    if tenant.stripe_customer_id:
        return tenant.stripe_customer_id
    customer = client.v1.customers.create(
        params={"name": tenant.name, "metadata": {"tenant_id": tenant.tenant_id}},
        options={"idempotency_key": f"chatmeter-customer-{tenant.tenant_id}"},
    )
    store.update_tenant(tenant.tenant_id, stripe_customer_id=customer.id)
    return customer.id


def sync_invoice(client: stripe.StripeClient, customer_id: str, doc: dict, days_until_due: int) -> str:
    invoice_id = doc["invoice_id"]
    invoice = client.v1.invoices.create(
        params={
            "customer": customer_id,
            "currency": doc["currency"].lower(),
            "collection_method": "send_invoice",
            "days_until_due": days_until_due,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "description": f"chatmeter {doc['period']} ({doc['period_start']} to {doc['period_end']})",
            "metadata": {"chatmeter_invoice_id": invoice_id, "chatmeter_tenant_id": doc["tenant_id"]},
        },
        options={"idempotency_key": f"chatmeter-invoice-{invoice_id}"},
    )
    for line in doc["lines"]:
        amount = cents(line["amount"])
        if amount == 0:
            continue
        client.v1.invoice_items.create(
            params={
                "customer": customer_id,
                "invoice": invoice.id,
                "currency": doc["currency"].lower(),
                "amount": amount,
                "description": line["description"] or line["kind"],
                "metadata": {
                    "chatmeter_invoice_id": invoice_id,
                    "line_number": str(line["line_number"]),
                    "kind": line["kind"],
                },
            },
            options={"idempotency_key": f"chatmeter-line-{invoice_id}-{line['line_number']}"},
        )
    client.v1.invoices.finalize_invoice(invoice.id, options={"idempotency_key": f"chatmeter-finalize-{invoice_id}"})
    return invoice.id


def sync_invoices(
    client: stripe.StripeClient, store: st.Store, docs: list[dict], now: datetime, days_until_due: int = 14
) -> dict[str, str]:
    """Sync every finalised document not yet in Stripe; returns {invoice_id: stripe_invoice_id} created."""
    t = st.invoice_states
    with store.engine.connect() as con:
        synced = {r.invoice_id for r in con.execute(select(t.c.invoice_id).where(t.c.stripe_invoice_id.is_not(None)))}
    created = {}
    for doc in docs:
        if doc["status"] != "finalized" or doc["invoice_id"] in synced:
            continue
        tenant = store.get_tenant(doc["tenant_id"])
        if tenant is None:
            log.warning("invoice %s: tenant %s not found", doc["invoice_id"], doc["tenant_id"])
            continue
        customer_id = ensure_customer(client, store, tenant)
        stripe_id = sync_invoice(client, customer_id, doc, days_until_due)
        with store.engine.begin() as con:
            con.execute(
                t.update()
                .where(t.c.invoice_id == doc["invoice_id"])
                .values(stripe_invoice_id=stripe_id, updated_at=now)
            )
        created[doc["invoice_id"]] = stripe_id
    return created
