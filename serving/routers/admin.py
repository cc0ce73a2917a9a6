"""The operator's API: tenants, keys, plans, top-ups, credit grants, catalog, usage export, invoices.

Every route needs `Authorization: Bearer $CHATMETER_ADMIN_TOKEN`; tenant keys are refused.
"""

import csv
import io
import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated

import pyarrow.compute as pc
import pyarrow.dataset as ds
from fastapi import APIRouter, Query
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from chatmeter.catalog import CatalogError
from chatmeter.schemas import EVENT_SCHEMA
from chatmeter.store import Tenant
from chatmeter.windows import utcnow
from serving.admission import Subject
from serving.deps import AdminDep, RuntimeDep
from serving.errors import ApiError
from serving.http import JSONResponse
from serving.runtime import Runtime
from serving.usage import usage_state

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    plan: str | None = None
    webhook_url: AnyHttpUrl | None = None
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"], max_length=100)


class TenantUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    status: str | None = Field(default=None, pattern="^(active|suspended)$")
    webhook_url: AnyHttpUrl | None = None

    @field_validator("name", "status")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        # Left out means unchanged; an explicit null would blank a column that must have a value.
        if value is None:
            raise ValueError("may be left out, not null")
        return value


class KeyCreate(_Body):
    name: str = Field(default="default", min_length=1, max_length=200)


class WidgetKeyCreate(_Body):
    allowed_origins: list[str] = Field(min_length=1, max_length=100)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin such as https://shop.example")
        return [o.rstrip("/") for o in origins]


class PlanChange(_Body):
    plan: str
    effective_from: datetime | None = None


class TopupCreate(_Body):
    pack: str | None = None
    meter: str | None = Field(default=None, pattern="^(tokens|requests|embedding_tokens|credits)$")
    units: int | None = Field(default=None, gt=0, le=10**12)
    amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=6)
    expires_at: datetime | None = None
    priority: int = Field(default=0, ge=0, le=1000)


class CreditGrantCreate(_Body):
    amount: Decimal = Field(gt=0, max_digits=18, decimal_places=6)
    expires_at: datetime | None = None
    priority: int = Field(default=0, ge=0, le=1000)
    reason: str = Field(default="", max_length=500)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(422, "times must carry a UTC offset, e.g. 2026-01-01T00:00:00Z", code="naive_datetime")
    if value is not None:
        try:
            value.astimezone(UTC)  # stored in UTC: 0001-01-01T00:00+14:00 has no UTC time
        except OverflowError:
            raise ApiError(422, "time out of range once in UTC", code="invalid_datetime") from None
    return value


def _tenant(rt: Runtime, tenant_id: str) -> Tenant:
    tenant = rt.store.get_tenant(tenant_id)
    if tenant is None:
        raise ApiError(404, f"no tenant {tenant_id!r}", code="tenant_not_found")
    return tenant


def _plan(rt: Runtime, plan: str | None) -> str:
    plan = plan or rt.catalog.default_plan
    if plan not in rt.catalog.plans:
        raise ApiError(422, f"unknown plan {plan!r}; plans: {', '.join(rt.catalog.plans)}", code="unknown_plan")
    return plan


def _tenant_json(rt: Runtime, tenant: Tenant) -> dict:
    return {
        "tenant_id": tenant.tenant_id,
        "name": tenant.name,
        "status": tenant.status,
        "suspended_reason": tenant.suspended_reason,
        "plan": rt.store.plan_at(tenant.tenant_id, utcnow()),
        "anchor_day": tenant.anchor_day,
        "webhook_url": tenant.webhook_url,
        "stripe_customer_id": tenant.stripe_customer_id,
        "created_at": tenant.created_at,
    }


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantCreate, rt: RuntimeDep):
    plan = _plan(rt, body.plan)
    tenant, api_key, widget = rt.store.create_tenant(
        body.name,
        plan,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        allowed_origins=tuple(body.allowed_origins),
    )
    return JSONResponse(
        {
            **_tenant_json(rt, tenant),
            "api_key": api_key,
            "widget_key": widget.key,
            "webhook_secret": tenant.webhook_secret,
        },
        status_code=201,
    )


@router.get("/tenants")
async def list_tenants(rt: RuntimeDep):
    return JSONResponse({"data": [_tenant_json(rt, t) for t in rt.store.list_tenants()]})


@router.get("/tenants/{tenant_id}")
async def get_tenant(tenant_id: str, rt: RuntimeDep):
    return JSONResponse(_tenant_json(rt, _tenant(rt, tenant_id)))


@router.patch("/tenants/{tenant_id}")
async def update_tenant(tenant_id: str, body: TenantUpdate, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    values = body.model_dump(exclude_unset=True)
    if "webhook_url" in values and values["webhook_url"] is not None:
        values["webhook_url"] = str(values["webhook_url"])
    if "status" in values:
        values["suspended_reason"] = "admin" if values["status"] == "suspended" else None
    tenant = rt.store.update_tenant(tenant_id, **values)
    rt.forget_tenant(tenant_id)
    return JSONResponse(_tenant_json(rt, tenant))


@router.get("/tenants/{tenant_id}/usage")
async def tenant_usage(tenant_id: str, rt: RuntimeDep, user: Annotated[str | None, Query(max_length=256)] = None):
    _tenant(rt, tenant_id)
    ctx = rt.tenant_context(tenant_id)
    return JSONResponse(usage_state(rt.admission, ctx, Subject(tenant_id, "", user or "")))


# --- keys ---


@router.post("/tenants/{tenant_id}/keys", status_code=201)
async def create_key(tenant_id: str, rt: RuntimeDep, body: KeyCreate | None = None):
    _tenant(rt, tenant_id)
    key, secret = rt.store.create_api_key(tenant_id, (body or KeyCreate()).name)
    return JSONResponse(
        {"key_id": key.key_id, "name": key.name, "prefix": key.prefix, "api_key": secret, "created_at": key.created_at},
        status_code=201,
    )


@router.get("/tenants/{tenant_id}/keys")
async def list_keys(tenant_id: str, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    return JSONResponse(
        {
            "data": [
                {
                    "key_id": k.key_id,
                    "name": k.name,
                    "prefix": k.prefix,
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                }
                for k in rt.store.list_api_keys(tenant_id)
            ]
        }
    )


@router.delete("/tenants/{tenant_id}/keys/{key_id}")
async def revoke_key(tenant_id: str, key_id: str, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    if not rt.store.revoke_api_key(tenant_id, key_id):
        raise ApiError(404, f"no live key {key_id!r} for this tenant", code="key_not_found")
    rt.forget_tenant(tenant_id)
    return JSONResponse({"key_id": key_id, "revoked": True})


@router.post("/tenants/{tenant_id}/widget-keys", status_code=201)
async def create_widget_key(tenant_id: str, body: WidgetKeyCreate, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    key = rt.store.create_widget_key(tenant_id, body.allowed_origins)
    return JSONResponse(
        {"key_id": key.key_id, "widget_key": key.key, "allowed_origins": key.allowed_origins}, status_code=201
    )


@router.get("/tenants/{tenant_id}/widget-keys")
async def list_widget_keys(tenant_id: str, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    return JSONResponse(
        {
            "data": [
                {
                    "key_id": k.key_id,
                    "widget_key": k.key,
                    "allowed_origins": k.allowed_origins,
                    "revoked_at": k.revoked_at,
                }
                for k in rt.store.list_widget_keys(tenant_id)
            ]
        }
    )


@router.delete("/tenants/{tenant_id}/widget-keys/{key_id}")
async def revoke_widget_key(tenant_id: str, key_id: str, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    if not rt.store.revoke_widget_key(tenant_id, key_id):
        raise ApiError(404, f"no live widget key {key_id!r} for this tenant", code="key_not_found")
    rt.forget_tenant(tenant_id)
    return JSONResponse({"key_id": key_id, "revoked": True})


# --- plans, top-ups, credit grants ---


@router.put("/tenants/{tenant_id}/plan")
async def change_plan(tenant_id: str, body: PlanChange, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    plan = _plan(rt, body.plan)
    assignment = rt.store.assign_plan(tenant_id, plan, _aware(body.effective_from))
    rt.forget_tenant(tenant_id)
    return JSONResponse({"tenant_id": tenant_id, "plan": assignment.plan, "effective_from": assignment.effective_from})


@router.get("/tenants/{tenant_id}/plan-assignments")
async def plan_history(tenant_id: str, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    return JSONResponse(
        {"data": [{"plan": a.plan, "effective_from": a.effective_from} for a in rt.store.plan_assignments(tenant_id)]}
    )


@router.post("/tenants/{tenant_id}/topups", status_code=201)
async def add_topup(tenant_id: str, body: TopupCreate, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    if body.pack is not None:
        pack = rt.catalog.topup_packs.get(body.pack)
        if pack is None:
            raise ApiError(
                422,
                f"unknown top-up pack {body.pack!r}; packs: {', '.join(rt.catalog.topup_packs)}",
                code="unknown_pack",
            )
        meter, units, amount, source = pack.meter, pack.units, pack.price, f"pack:{body.pack}"
    elif body.meter and body.units is not None and body.amount is not None:
        meter, units, amount, source = body.meter, body.units, body.amount, "admin"
    else:
        raise ApiError(422, "give either `pack`, or `meter`, `units` and `amount`", code="invalid_topup")
    topup = rt.store.add_topup(
        tenant_id, meter, units, amount, expires_at=_aware(body.expires_at), priority=body.priority, source=source
    )
    rt.forget_tenant(tenant_id)
    return JSONResponse(_slots(topup), status_code=201)


@router.get("/tenants/{tenant_id}/topups")
async def list_topups(tenant_id: str, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    return JSONResponse({"data": [_slots(t) for t in rt.store.topups(tenant_id)]})


@router.post("/tenants/{tenant_id}/credit-grants", status_code=201)
async def add_credit_grant(tenant_id: str, body: CreditGrantCreate, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    grant = rt.store.add_credit_grant(
        tenant_id, body.amount, expires_at=_aware(body.expires_at), priority=body.priority, reason=body.reason
    )
    return JSONResponse(_slots(grant), status_code=201)


@router.get("/tenants/{tenant_id}/credit-grants")
async def list_credit_grants(tenant_id: str, rt: RuntimeDep):
    _tenant(rt, tenant_id)
    return JSONResponse({"data": [_slots(g) for g in rt.store.credit_grants(tenant_id)]})


def _slots(obj) -> dict:
    return {name: getattr(obj, name) for name in obj.__slots__}


# --- catalog ---


@router.get("/plans")
async def list_plans(rt: RuntimeDep):
    return JSONResponse(
        {
            "catalog": rt.catalog.version,
            "data": [{"plan": pid, **plan.model_dump(mode="json")} for pid, plan in rt.catalog.plans.items()],
        }
    )


@router.get("/catalog")
async def get_catalog(rt: RuntimeDep):
    return JSONResponse(rt.catalog.model_dump(mode="json"))


@router.post("/catalog/reload")
async def reload_catalog(rt: RuntimeDep):
    try:
        catalog = rt.catalogs.reload()
    except CatalogError as exc:
        raise ApiError(
            422,
            f"catalog refused, the previous one stays in force: {exc}",
            code="invalid_catalog",
            version_in_force=rt.catalog.version,
        ) from None
    rt.forget_all_tenants()
    return JSONResponse(
        {
            "version": catalog.version,
            "effective_from": catalog.effective_from,
            "digest": catalog.digest,
            "plans": list(catalog.plans),
        }
    )


# --- usage export and invoices ---


@router.get("/usage/export.csv")
async def export_usage(
    rt: RuntimeDep,
    start: Annotated[date | None, Query(description="first UTC day, inclusive")] = None,
    end: Annotated[date | None, Query(description="last UTC day, inclusive")] = None,
    tenant_id: Annotated[str | None, Query(max_length=64)] = None,
):
    """Every usage event of the period (from the Parquet log) as CSV."""
    if start and end and end < start:
        raise ApiError(400, "end is before start", code="invalid_range")
    root = rt.settings.events_dir
    columns = [c for c in EVENT_SCHEMA.names if c != "event_date"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    if root.exists() and any(root.rglob("*.parquet")):
        dataset = ds.dataset(root, format="parquet", partitioning="hive", schema=EVENT_SCHEMA)
        flt = None
        for part in (
            (ds.field("occurred_at") >= datetime.combine(start, time.min, UTC)) if start else None,
            (ds.field("occurred_at") < datetime.combine(end, time.max, UTC)) if end else None,
            (ds.field("tenant_id") == tenant_id) if tenant_id else None,
        ):
            if part is not None:
                flt = part if flt is None else flt & part
        table = dataset.to_table(columns=columns, filter=flt)
        table = table.take(pc.sort_indices(table, [("occurred_at", "ascending"), ("seq", "ascending")]))
        seen = set()
        for row in table.to_pylist():
            if row["event_id"] in seen:
                continue
            seen.add(row["event_id"])
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return Response(
        out.getvalue(), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="usage.csv"'}
    )


@router.get("/invoices")
async def list_invoices(rt: RuntimeDep, period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None):
    root = rt.settings.invoices_dir
    pattern = f"{period}/*.json" if period else "*/*.json"
    data = []
    for path in sorted(root.glob(pattern)) if root.exists() else []:
        doc = json.loads(path.read_text())
        data.append(
            {
                k: doc.get(k)
                for k in (
                    "invoice_id",
                    "tenant_id",
                    "plan",
                    "period_start",
                    "period_end",
                    "currency",
                    "status",
                    "total",
                )
            }
        )
    return JSONResponse({"data": data})


@router.get("/invoices/{period}/{tenant_id}")
async def get_invoice(period: str, tenant_id: str, rt: RuntimeDep):
    if not (len(period) == 7 and period[4] == "-" and period.replace("-", "").isdigit()):
        raise ApiError(400, "period is YYYY-MM", code="invalid_period")
    path = rt.settings.invoices_dir / period / f"{tenant_id}.json"
    if "/" in tenant_id or not path.exists():
        raise ApiError(404, f"no invoice for {tenant_id!r} in {period}", code="invoice_not_found")
    return Response(path.read_bytes(), media_type="application/json")
