"""A tenant's usage state: the seed's fields for the monthly token limit, then per meter, window and scope."""

from datetime import datetime
from decimal import Decimal

from chatmeter.catalog import METERS
from chatmeter.windows import billing_month, day_window, utcnow
from serving.admission import Admission, Subject, counter_key
from serving.runtime import TenantContext

WARNING_AT = Decimal("0.75")
CRITICAL_AT = Decimal("0.90")


def warning_level(used, limit) -> str:
    if not limit:
        return "ok" if limit is None or not used else "critical"
    ratio = Decimal(used) / Decimal(limit)
    return "critical" if ratio >= CRITICAL_AT else "warning" if ratio >= WARNING_AT else "ok"


def _num(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return value


def _percent(used, limit) -> int | None:
    if not limit:
        return None
    return int(Decimal(used) * 100 // Decimal(limit))


def usage_state(admission: Admission, ctx: TenantContext, subject: Subject, now: datetime | None = None) -> dict:
    now = now or utcnow()
    tenant = ctx.tenant
    windows = {"day": day_window(now), "month": billing_month(now, tenant.anchor_day)}
    limits = {(x.meter, x.window, x.scope): x for x in ctx.plan.limits}
    detail = []
    scopes = ["tenant", "key"] + (["end_user"] if subject.end_user_id else [])
    for scope in scopes:
        for meter in METERS:
            for window_kind, window in windows.items():
                limit = limits.get((meter, window_kind, scope))
                if limit is None and scope == "end_user":
                    # The snapshot counts end users only where a plan limits them: elsewhere it would show
                    # live usage since the last snapshot only.
                    continue
                key = counter_key(subject, scope, meter, window)
                used = admission.used(key)
                if limit is None and not used:
                    continue
                hard = limit.hard if limit is not None else None
                if hard is not None and window_kind == "month" and scope == "tenant":
                    hard += ctx.topup_units.get(meter, 0)
                cap = hard if hard is not None else (limit.included if limit is not None else None)
                detail.append(
                    {
                        "meter": meter,
                        "window": window_kind,
                        "scope": scope,
                        "scopeId": subject.scope_id(scope),
                        "used": _num(used),
                        "reserved": _num(admission.reserved(key)),
                        "included": _num(limit.included) if limit is not None else None,
                        "softLimit": _num(limit.soft) if limit is not None and limit.soft is not None else None,
                        "limit": _num(cap),
                        "hardLimit": hard is not None,
                        "remaining": _num(max(cap - used, 0)) if cap is not None else None,
                        "percentUsed": _percent(used, cap),
                        "warningLevel": warning_level(used, cap),
                        "windowStart": window.start.isoformat(),
                        "resetsAt": window.end.isoformat(),
                    }
                )
    month = windows["month"]
    monthly = next((d for d in detail if (d["meter"], d["window"], d["scope"]) == ("tokens", "month", "tenant")), None)
    used = monthly["used"] if monthly else admission.used(counter_key(subject, "tenant", "tokens", month))
    limit = monthly["limit"] if monthly else None
    seconds = (month.end - now).total_seconds()
    levels = [d["warningLevel"] for d in detail if d["limit"] is not None]
    worst = "critical" if "critical" in levels else "warning" if "warning" in levels else "ok"
    return {
        "tenantId": tenant.tenant_id,
        "monthlyUsage": used,
        "monthlyLimit": limit,
        "percentUsed": _percent(used, limit),
        "remaining": max(limit - used, 0) if limit is not None else None,
        "subscriptionTier": ctx.plan_id,
        "resetDate": month.end.isoformat(),
        "daysUntilReset": max(0, int(-(-seconds // 86400))),
        "warningLevel": warning_level(used, limit) if limit is not None else worst,
        "status": tenant.status,
        "periodStart": month.start.isoformat(),
        "snapshotId": admission.snapshot_id,
        "meters": detail,
    }
