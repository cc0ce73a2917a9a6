"""POST /webhooks/stripe: signature verified; each Stripe event id applied once.

invoice.payment_succeeded marks the invoice paid and lifts a past-due suspension; invoice.payment_failed
suspends the tenant (refusals then say 402 payment_required). Monthly windows roll over by time, never here.
"""

import json
import logging

import stripe
from fastapi import APIRouter, Request

from chatmeter.store import BillingState
from chatmeter.windows import utcnow
from serving.deps import RuntimeDep
from serving.errors import ApiError
from serving.http import JSONResponse

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request, rt: RuntimeDep):
    secret = rt.settings.stripe_webhook_secret
    if not secret:
        raise ApiError(503, "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)", code="webhooks_disabled")
    payload = await request.body()
    try:
        stripe.Webhook.construct_event(payload, request.headers.get("stripe-signature"), secret)
        event = json.loads(payload)
        event_type = str(event["type"])
        obj = event.get("data", {}).get("object") or {}
    except (ValueError, KeyError, AttributeError, stripe.SignatureVerificationError) as exc:
        raise ApiError(400, f"unverifiable Stripe event: {exc}", code="invalid_signature") from None
    metadata = obj.get("metadata") or {}
    outcome = "ignored"
    if event_type in ("invoice.payment_succeeded", "invoice.payment_failed"):
        outcome = BillingState(rt.store).apply_invoice_event(
            event["id"], event_type, obj.get("id"), metadata.get("chatmeter_invoice_id"), utcnow()
        )
        tenant_id = metadata.get("chatmeter_tenant_id")
        if tenant_id:
            rt.forget_tenant(tenant_id)
        else:
            rt.forget_all_tenants()
    log.info("stripe event %s %s: %s", event["id"], event_type, outcome)
    return JSONResponse({"received": True, "outcome": outcome})
