"""POST /webhooks/stripe with real Stripe signatures (HMAC-SHA256 over `t.payload`)."""

import hashlib
import hmac
import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert, select

from chatmeter import store as st
from chatmeter.windows import utcnow
from tests.conftest import chat_body

SECRET = "whsec_test_secret"


def signed(event: dict, secret: str = SECRET, at: int | None = None) -> tuple[bytes, dict]:
    payload = json.dumps(event).encode()
    at = at or int(time.time())
    signature = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, {"Stripe-Signature": f"t={at},v1={signature}", "Content-Type": "application/json"}


def invoice_event(event_id: str, kind: str, tenant_id: str, invoice_id: str) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "api_version": "2024-06-20",
        "data": {
            "object": {
                "id": f"in_{invoice_id}",
                "object": "invoice",
                "metadata": {"chatmeter_invoice_id": invoice_id, "chatmeter_tenant_id": tenant_id},
            }
        },
    }


@pytest.fixture
def settings(settings):
    settings.stripe_webhook_secret = SECRET
    return settings


def _invoice(rt, tenant_id: str, invoice_id: str, status: str = "finalized", days_ago: int = 0) -> None:
    with rt.store.engine.begin() as con:
        con.execute(
            insert(st.invoice_states).values(
                invoice_id=invoice_id,
                tenant_id=tenant_id,
                period="2026-10",
                status=status,
                total=Decimal("9.99"),
                finalized_at=utcnow() - timedelta(days=days_ago),
                updated_at=utcnow(),
            )
        )


def _status(rt, invoice_id: str) -> str:
    with rt.store.engine.connect() as con:
        return con.execute(
            select(st.invoice_states.c.status).where(st.invoice_states.c.invoice_id == invoice_id)
        ).scalar()


def test_payment_failed_suspends_and_payment_succeeded_lifts(client, tenants):
    t = tenants.create("pro")
    rt = client.app.state.runtime
    _invoice(rt, t["tenant_id"], "inv_1")
    payload, headers = signed(invoice_event("evt_1", "invoice.payment_failed", t["tenant_id"], "inv_1"))
    r = client.post("/webhooks/stripe", content=payload, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"] == "payment_failed"
    refused = client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"])
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "payment_required"
    payload, headers = signed(invoice_event("evt_2", "invoice.payment_succeeded", t["tenant_id"], "inv_1"))
    assert client.post("/webhooks/stripe", content=payload, headers=headers).json()["outcome"] == "paid"
    assert _status(rt, "inv_1") == "paid"
    assert client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"]).status_code == 200


def test_each_event_id_is_applied_once(client, tenants):
    t = tenants.create("pro")
    rt = client.app.state.runtime
    _invoice(rt, t["tenant_id"], "inv_2")
    payload, headers = signed(invoice_event("evt_9", "invoice.payment_succeeded", t["tenant_id"], "inv_2"))
    assert client.post("/webhooks/stripe", content=payload, headers=headers).json()["outcome"] == "paid"
    # A replay of the same event, after the state moved on, changes nothing.
    rt.store.update_tenant(t["tenant_id"], status="suspended", suspended_reason="payment_required")
    assert client.post("/webhooks/stripe", content=payload, headers=headers).json()["outcome"] == "duplicate"
    assert rt.store.get_tenant(t["tenant_id"]).status == "suspended"


@pytest.mark.parametrize("tamper", ["bad_secret", "old", "edited", "missing"])
def test_unverifiable_events_are_400_and_change_nothing(client, tenants, tamper):
    t = tenants.create("pro")
    rt = client.app.state.runtime
    _invoice(rt, t["tenant_id"], "inv_3", status="payment_failed")
    event = invoice_event("evt_x", "invoice.payment_succeeded", t["tenant_id"], "inv_3")
    payload, headers = signed(
        event,
        secret="whsec_wrong" if tamper == "bad_secret" else SECRET,
        at=int(time.time()) - 3600 if tamper == "old" else None,
    )
    if tamper == "edited":
        payload = payload.replace(b"inv_3", b"inv_4")
    if tamper == "missing":
        headers.pop("Stripe-Signature")
    r = client.post("/webhooks/stripe", content=payload, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    assert _status(rt, "inv_3") == "payment_failed"


def test_unpaid_past_the_grace_period_suspends(client, tenants, settings):
    t = tenants.create("pro")
    other = tenants.create("pro", "B")
    rt = client.app.state.runtime
    _invoice(rt, t["tenant_id"], "inv_old", days_ago=settings.grace_days + 1)
    _invoice(rt, other["tenant_id"], "inv_new", days_ago=settings.grace_days - 1)
    assert rt.suspend_overdue() == [t["tenant_id"]]
    assert client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"]).status_code == 402
    assert client.post("/v1/chat/completions", json=chat_body(), headers=other["headers"]).status_code == 200
    payload, headers = signed(invoice_event("evt_p", "invoice.payment_succeeded", t["tenant_id"], "inv_old"))
    client.post("/webhooks/stripe", content=payload, headers=headers)
    assert client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"]).status_code == 200
