"""One metered model call: admit (hold), call, settle (durable event, then counters)."""

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from chatmeter.ids import uuid7
from chatmeter.metering import Usage, quantities
from chatmeter.pricing import can_price, provider_cost
from chatmeter.windows import utcnow
from serving import metrics
from serving.admission import Hold, Refusal, Rule, Subject, contributions
from serving.errors import ApiError
from serving.eventlog import LogUnavailable
from serving.runtime import Runtime, TenantContext

log = logging.getLogger(__name__)
_background: set[asyncio.Task] = set()


@dataclass(slots=True)
class Call:
    """What is known of a call before it reaches the model."""

    tenant: TenantContext
    subject: Subject
    kind: str
    model: str
    context: str
    conversation_id: str | None = None
    idempotency_key: str | None = None
    started: float = field(default_factory=time.perf_counter)
    holds: list[Hold] = field(default_factory=list)

    def release(self, rt: Runtime) -> None:
        while self.holds:
            rt.admission.release(self.holds.pop())


def check_model(rt: Runtime, model: str) -> None:
    if not can_price(rt.catalog, model, rt.provider.name):
        raise ApiError(
            400,
            f"model {model!r} has no price in the catalog, so it cannot be metered; ask the operator to price it",
            code="model_not_priced",
            param="model",
        )


def check_active(call: Call) -> None:
    tenant = call.tenant.tenant
    if tenant.status == "suspended":
        reason = tenant.suspended_reason or "admin"
        if reason == "payment_required":
            raise ApiError(
                402,
                "the tenant is suspended: an invoice is unpaid past its grace period",
                code="payment_required",
                type="payment_required",
                headers={"x-should-retry": "false"},
            )
        raise ApiError(403, "the tenant is suspended", code="tenant_suspended", headers={"x-should-retry": "false"})


async def admit(rt: Runtime, call: Call, input_tokens: int, max_tokens: int, embedding_tokens: int = 0) -> Hold:
    """Hold the call's usage, or record a rejected event and raise the documented 429."""
    check_active(call)
    now = utcnow()
    credits = rt.catalog.credits.for_event(call.kind, call.model)
    rules = rules_in_force(rt, call, now)
    result = rt.admission.admit(rules, input_tokens, max_tokens, credits, embedding_tokens, call.kind)
    if isinstance(result, Refusal):
        metrics.COUNTS.refused += 1
        await _record(rt, call, "rejected", Usage(), now, error_code=result.code)
        raise refusal_error(result)
    if result.clamped:
        metrics.COUNTS.clamped += 1
    else:
        metrics.COUNTS.admitted += 1
    call.holds.append(result)
    return result


def rules_in_force(rt: Runtime, call: Call, now: datetime) -> list[Rule]:
    """The call's hard limits, the same for every call of one key and end user on one UTC day (both windows
    turn at 00:00 UTC), so kept with the tenant's cached context."""
    ctx = call.tenant
    key = (call.subject.api_key_id, call.subject.end_user_id, now.date())
    rules = ctx.rules.get(key)
    if rules is None:
        if len(ctx.rules) > 10_000:
            ctx.rules.clear()
        rules = ctx.rules[key] = rt.admission.rules(
            rt.catalog, ctx.plan, call.subject, ctx.tenant.anchor_day, now, ctx.topup_units
        )
    return rules


def refusal_error(refusal: Refusal) -> ApiError:
    limit = refusal.rule.limit
    window = refusal.rule.window
    scope = "" if limit.scope == "tenant" else f" for this {limit.scope.replace('_', ' ')}"
    wait = window.seconds_to_reset
    return ApiError(
        429,
        f"{limit.meter} limit of {refusal.rule.hard} per {limit.window}{scope} reached "
        f"({refusal.used} used, {refusal.requested} more needed); resets at {window.end.isoformat()}",
        type="usage_limit_exceeded",
        code=refusal.code,
        headers={"x-should-retry": "false", "Retry-After": str(wait)},
        limit=_plain(refusal.rule.hard),
        used=_plain(refusal.used),
        resets_at=window.end.isoformat(),
        scope=limit.scope,
    )


def _plain(value):
    return int(value) if isinstance(value, int) or value == int(value) else str(value)


def settle(
    rt: Runtime,
    call: Call,
    usage: Usage,
    *,
    event_id: str | None = None,
    status: str = "ok",
    error_code: str | None = None,
    transcripts: list[dict] = (),
    idempotency: dict | None = None,
) -> Coroutine[Any, Any, str]:
    """Make the event durable, then replace the call's holds with its actual usage; awaited, the event id.

    The log takes that step itself, in one go, as soon as the event is durable (or drops the holds when it
    could not be written), whether or not the caller still waits: a client going away can neither leave a
    durable event uncounted nor let the counters dip below what was used. A plain function handing back
    _record's coroutine: a request waiting for its batch suspends and resumes through one coroutine less.
    `event_id`, when given, is the id the call already answered with (a new UUIDv7 each time otherwise).
    """
    holds, call.holds = call.holds, []
    return _record(
        rt,
        call,
        status,
        usage,
        utcnow(),
        event_id=event_id,
        error_code=error_code,
        transcripts=transcripts,
        idempotency=idempotency,
        holds=holds,
    )


def settle_later(rt: Runtime, call: Call, usage: Usage, **kwargs) -> None:
    """Settle outside a cancelled request (a client that went away mid-stream)."""
    task = asyncio.get_running_loop().create_task(settle(rt, call, usage, **kwargs))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _record(
    rt: Runtime,
    call: Call,
    status: str,
    usage: Usage,
    at: datetime,
    *,
    event_id: str | None = None,
    error_code: str | None = None,
    transcripts: list[dict] = (),
    idempotency: dict | None = None,
    holds: list[Hold] = (),
) -> str:
    """Append the call's event; once durable, count it and drop `holds` in the same step."""
    metered = status != "rejected" and (usage.total_tokens or usage.embedding_tokens)
    credits = rt.catalog.credits.for_event(call.kind, call.model) if metered else Decimal(0)
    cost = provider_cost(rt.catalog, call.model, usage, rt.provider.name, at) if metered else Decimal(0)
    event_id = event_id or uuid7()
    event = {
        "event_id": event_id,
        "idempotency_key": call.idempotency_key,
        "occurred_at": at,
        "tenant_id": call.subject.tenant_id,
        "api_key_id": call.subject.api_key_id or None,
        "end_user_id": call.subject.end_user_id or None,
        "conversation_id": call.conversation_id,
        "context": call.context,
        "kind": call.kind,
        "status": status,
        "provider": rt.provider.name,
        "model": call.model,
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "tool_calls": usage.tool_calls,
        "credits": credits,
        "provider_cost_usd": cost,
        "latency_ms": int((time.perf_counter() - call.started) * 1000),
        "usage_estimated": usage.estimated,
        "embedding_tokens": usage.embedding_tokens,
        "error_code": error_code,
    }
    for n, row in enumerate(transcripts):
        row["event_id"] = event_id
        # Unique as event ids are, without drawing an id per message.
        row["message_id"] = f"{event_id}:{n}"
        row.setdefault("occurred_at", at)

    def durable(seq: int | None) -> None:
        if seq is not None:
            if idempotency is not None:  # a retry from now on is answered from the log's stored response
                rt.idempotency[(idempotency["tenant_id"], idempotency["key"])] = idempotency
            if metered:
                metrics.COUNTS.input_tokens += usage.input_tokens
                metrics.COUNTS.output_tokens += usage.output_tokens
            # The log rounds money to its columns' scale; count exactly what it holds.
            amounts = quantities(call.kind, status, usage, event["credits"])
            if amounts:
                counted = contributions(call.subject, call.tenant.tenant.anchor_day, at, amounts)
                rt.admission.record(rt.settings.writer_id, seq, counted)
        for hold in holds:
            rt.admission.release(hold)

    try:
        await rt.log.submit(event, list(transcripts), idempotency, durable)
    except LogUnavailable as exc:
        durable(None)  # the log never took it (or has dropped the holds already: releasing twice is harmless)
        log.error("usage log unavailable: %s", exc)
        raise ApiError(
            503,
            "the usage log cannot be written right now; nothing was recorded, retry later",
            code="log_unavailable",
            headers={"Retry-After": "5"},
        ) from None
    except (TypeError, ValueError):
        durable(None)
        raise
    return event_id
