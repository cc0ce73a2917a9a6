"""The metadata store: tenants, keys, plan assignments, top-ups, credit grants, Stripe state.

SQLAlchemy Core on SQLite by default (under the data dir); a Postgres URL works too. API keys are kept as
SHA-256 hashes (they are 256-bit random secrets, so a slow hash adds nothing); the secret is shown once.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from chatmeter.ids import new_id, new_secret
from chatmeter.windows import utcnow


class Money(TypeDecorator):
    """Decimal kept exactly, as text, on every backend."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes in, timezone-aware UTC datetimes out (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times are UTC and must say so")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(20), nullable=False, default="active"),  # active | suspended
    Column("suspended_reason", String(40)),  # payment_required | admin
    Column("anchor_day", Integer, nullable=False),
    Column("webhook_url", Text),
    Column("webhook_secret", String(80)),
    Column("stripe_customer_id", String(80)),
    Column("created_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.tenant_id"), nullable=False, index=True),
    Column("name", String(200), nullable=False, default="default"),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

widget_keys = Table(
    "widget_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.tenant_id"), nullable=False, index=True),
    Column("key", String(80), nullable=False, unique=True),  # publishable: not a secret
    Column("allowed_origins", Text, nullable=False, default="[]"),  # JSON list; ["*"] allows any
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

plan_assignments = Table(
    "plan_assignments",
    metadata,
    Column("assignment_id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), ForeignKey("tenants.tenant_id"), nullable=False, index=True),
    Column("plan", String(64), nullable=False),
    Column("effective_from", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

topups = Table(
    "topups",
    metadata,
    Column("topup_id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.tenant_id"), nullable=False, index=True),
    Column("meter", String(40), nullable=False),
    Column("units", Integer, nullable=False),
    Column("amount", Money, nullable=False),  # what the tenant pays for it
    Column("granted_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("priority", Integer, nullable=False, default=0),
    Column("source", String(80), nullable=False, default="admin"),
)

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.tenant_id"), nullable=False, index=True),
    Column("amount", Money, nullable=False),  # money off future invoices
    Column("granted_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("priority", Integer, nullable=False, default=0),
    Column("reason", Text, nullable=False, default=""),
)

invoice_states = Table(
    "invoice_states",
    metadata,
    Column("invoice_id", String(80), primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("period", String(7), nullable=False),
    Column("status", String(20), nullable=False),  # draft | finalized | paid | payment_failed
    Column("total", Money),
    Column("stripe_invoice_id", String(80)),
    Column("finalized_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

stripe_events = Table(
    "stripe_events",
    metadata,
    Column("event_id", String(80), primary_key=True),
    Column("type", String(80), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    status: str
    suspended_reason: str | None
    anchor_day: int
    webhook_url: str | None
    webhook_secret: str | None
    stripe_customer_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class WidgetKey:
    key_id: str
    tenant_id: str
    key: str
    allowed_origins: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, origin: str | None) -> bool:
        return "*" in self.allowed_origins or (origin is not None and origin in self.allowed_origins)


@dataclass(frozen=True, slots=True)
class PlanAssignment:
    tenant_id: str
    plan: str
    effective_from: datetime


@dataclass(frozen=True, slots=True)
class Topup:
    topup_id: str
    tenant_id: str
    meter: str
    units: int
    amount: Decimal
    granted_at: datetime
    expires_at: datetime | None
    priority: int
    source: str


@dataclass(frozen=True, slots=True)
class CreditGrant:
    grant_id: str
    tenant_id: str
    amount: Decimal
    granted_at: datetime
    expires_at: datetime | None
    priority: int
    reason: str


def _row(cls, row):
    return cls(**{k: row._mapping[k] for k in cls.__slots__})


def _widget(row) -> WidgetKey:
    m = dict(row._mapping)
    m["allowed_origins"] = tuple(json.loads(m["allowed_origins"]))
    return WidgetKey(**{k: m[k] for k in WidgetKey.__slots__})


class Store:
    def __init__(self, url: str):
        self.engine: Engine = create_engine(url, future=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    # --- tenants ---

    def create_tenant(
        self,
        name: str,
        plan: str,
        *,
        at: datetime | None = None,
        webhook_url: str | None = None,
        allowed_origins: tuple[str, ...] = ("*",),
    ) -> tuple[Tenant, str, WidgetKey]:
        """A tenant on `plan` from `at`, with its first API key (the secret is returned once) and widget key."""
        at = at or utcnow()
        tenant_id = new_id("tn")
        with self.engine.begin() as con:
            con.execute(
                insert(tenants).values(
                    tenant_id=tenant_id,
                    name=name,
                    status="active",
                    anchor_day=at.astimezone(UTC).day,
                    webhook_url=webhook_url,
                    webhook_secret=new_secret("whsec"),
                    created_at=at,
                )
            )
            con.execute(
                insert(plan_assignments).values(tenant_id=tenant_id, plan=plan, effective_from=at, created_at=at)
            )
        _, secret = self.create_api_key(tenant_id, "default", at=at)
        widget = self.create_widget_key(tenant_id, allowed_origins, at=at)
        return self.get_tenant(tenant_id), secret, widget

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        with self.engine.connect() as con:
            row = con.execute(select(tenants).where(tenants.c.tenant_id == tenant_id)).first()
        return _row(Tenant, row) if row else None

    def list_tenants(self) -> list[Tenant]:
        with self.engine.connect() as con:
            return [_row(Tenant, r) for r in con.execute(select(tenants).order_by(tenants.c.created_at))]

    def update_tenant(self, tenant_id: str, **values) -> Tenant | None:
        allowed = {"name", "status", "suspended_reason", "webhook_url", "stripe_customer_id"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        if values:  # an empty UPDATE is not SQL; nothing to change is no change
            with self.engine.begin() as con:
                con.execute(update(tenants).where(tenants.c.tenant_id == tenant_id).values(**values))
        return self.get_tenant(tenant_id)

    # --- API keys ---

    def create_api_key(
        self, tenant_id: str, name: str = "default", *, at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        secret = new_secret("cm_live")
        key_id = new_id("key")
        with self.engine.begin() as con:
            con.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    tenant_id=tenant_id,
                    name=name,
                    key_hash=hash_secret(secret),
                    prefix=secret[:12],
                    created_at=at or utcnow(),
                )
            )
        return self.get_api_key(tenant_id, key_id), secret

    def get_api_key(self, tenant_id: str, key_id: str) -> ApiKey | None:
        with self.engine.connect() as con:
            row = con.execute(
                select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.tenant_id == tenant_id)
            ).first()
        return _row(ApiKey, row) if row else None

    def list_api_keys(self, tenant_id: str) -> list[ApiKey]:
        with self.engine.connect() as con:
            rows = con.execute(
                select(api_keys).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
            )
            return [_row(ApiKey, r) for r in rows]

    def revoke_api_key(self, tenant_id: str, key_id: str) -> bool:
        with self.engine.begin() as con:
            result = con.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return result.rowcount == 1

    def find_api_key(self, secret: str) -> ApiKey | None:
        """The live key whose secret this is, or None."""
        with self.engine.connect() as con:
            row = con.execute(
                select(api_keys).where(api_keys.c.key_hash == hash_secret(secret), api_keys.c.revoked_at.is_(None))
            ).first()
        return _row(ApiKey, row) if row else None

    # --- widget keys ---

    def create_widget_key(
        self, tenant_id: str, allowed_origins: tuple[str, ...] | list[str], *, at: datetime | None = None
    ) -> WidgetKey:
        key_id = new_id("wk")
        with self.engine.begin() as con:
            con.execute(
                insert(widget_keys).values(
                    key_id=key_id,
                    tenant_id=tenant_id,
                    key=new_secret("cm_pub"),
                    allowed_origins=json.dumps(list(allowed_origins)),
                    created_at=at or utcnow(),
                )
            )
            row = con.execute(select(widget_keys).where(widget_keys.c.key_id == key_id)).one()
        return _widget(row)

    def list_widget_keys(self, tenant_id: str) -> list[WidgetKey]:
        with self.engine.connect() as con:
            rows = con.execute(select(widget_keys).where(widget_keys.c.tenant_id == tenant_id))
            return [_widget(r) for r in rows]

    def revoke_widget_key(self, tenant_id: str, key_id: str) -> bool:
        with self.engine.begin() as con:
            result = con.execute(
                update(widget_keys)
                .where(
                    widget_keys.c.key_id == key_id,
                    widget_keys.c.tenant_id == tenant_id,
                    widget_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        return result.rowcount == 1

    def find_widget_key(self, key: str) -> WidgetKey | None:
        with self.engine.connect() as con:
            row = con.execute(
                select(widget_keys).where(widget_keys.c.key == key, widget_keys.c.revoked_at.is_(None))
            ).first()
        return _widget(row) if row else None

    # --- plans ---

    def assign_plan(self, tenant_id: str, plan: str, effective_from: datetime | None = None) -> PlanAssignment:
        effective_from = effective_from or utcnow()
        with self.engine.begin() as con:
            con.execute(
                insert(plan_assignments).values(
                    tenant_id=tenant_id, plan=plan, effective_from=effective_from, created_at=utcnow()
                )
            )
        return PlanAssignment(tenant_id, plan, effective_from)

    def plan_assignments(self, tenant_id: str | None = None) -> list[PlanAssignment]:
        query = select(plan_assignments).order_by(plan_assignments.c.effective_from, plan_assignments.c.assignment_id)
        if tenant_id is not None:
            query = query.where(plan_assignments.c.tenant_id == tenant_id)
        with self.engine.connect() as con:
            return [_row(PlanAssignment, r) for r in con.execute(query)]

    def plan_at(self, tenant_id: str, at: datetime) -> str | None:
        """The plan in force at `at`: the latest assignment effective at or before it."""
        current = None
        for a in self.plan_assignments(tenant_id):
            if a.effective_from <= at:
                current = a.plan
        return current

    # --- top-ups and credit grants ---

    def add_topup(
        self,
        tenant_id: str,
        meter: str,
        units: int,
        amount: Decimal,
        *,
        granted_at: datetime | None = None,
        expires_at: datetime | None = None,
        priority: int = 0,
        source: str = "admin",
    ) -> Topup:
        row = {
            "topup_id": new_id("tu"),
            "tenant_id": tenant_id,
            "meter": meter,
            "units": units,
            "amount": Decimal(amount),
            "granted_at": granted_at or utcnow(),
            "expires_at": expires_at,
            "priority": priority,
            "source": source,
        }
        with self.engine.begin() as con:
            con.execute(insert(topups).values(**row))
        return Topup(**row)

    def topups(self, tenant_id: str | None = None) -> list[Topup]:
        query = select(topups).order_by(topups.c.granted_at)
        if tenant_id is not None:
            query = query.where(topups.c.tenant_id == tenant_id)
        with self.engine.connect() as con:
            return [_row(Topup, r) for r in con.execute(query)]

    def add_credit_grant(
        self,
        tenant_id: str,
        amount: Decimal,
        *,
        granted_at: datetime | None = None,
        expires_at: datetime | None = None,
        priority: int = 0,
        reason: str = "",
    ) -> CreditGrant:
        row = {
            "grant_id": new_id("cg"),
            "tenant_id": tenant_id,
            "amount": Decimal(amount),
            "granted_at": granted_at or utcnow(),
            "expires_at": expires_at,
            "priority": priority,
            "reason": reason,
        }
        with self.engine.begin() as con:
            con.execute(insert(credit_grants).values(**row))
        return CreditGrant(**row)

    def credit_grants(self, tenant_id: str | None = None) -> list[CreditGrant]:
        query = select(credit_grants).order_by(credit_grants.c.granted_at)
        if tenant_id is not None:
            query = query.where(credit_grants.c.tenant_id == tenant_id)
        with self.engine.connect() as con:
            return [_row(CreditGrant, r) for r in con.execute(query)]


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class BillingState:
    """Payment state kept by the API: Stripe events applied once, paid invoices, past-due suspensions."""

    def __init__(self, store: Store):
        self.store = store

    def apply_invoice_event(
        self,
        event_id: str,
        event_type: str,
        stripe_invoice_id: str | None,
        chatmeter_invoice_id: str | None,
        now: datetime,
    ) -> str:
        """Apply a Stripe invoice event once, in one transaction. Returns what happened."""
        t, e = invoice_states, stripe_events
        with self.store.engine.begin() as con:
            if con.execute(select(e.c.event_id).where(e.c.event_id == event_id)).first() is not None:
                return "duplicate"
            con.execute(insert(e).values(event_id=event_id, type=event_type, received_at=now))
            query = select(t)
            if chatmeter_invoice_id:
                query = query.where(t.c.invoice_id == chatmeter_invoice_id)
            elif stripe_invoice_id:
                query = query.where(t.c.stripe_invoice_id == stripe_invoice_id)
            else:
                return "unmatched"
            invoice = con.execute(query).first()
            if invoice is None:
                return "unmatched"
            if event_type == "invoice.payment_succeeded":
                con.execute(update(t).where(t.c.invoice_id == invoice.invoice_id).values(status="paid", updated_at=now))
                # Lift a past-due suspension once nothing else of the tenant's is unpaid past due.
                if not _overdue(con, invoice.tenant_id, now, exclude=invoice.invoice_id):
                    con.execute(
                        update(tenants)
                        .where(
                            tenants.c.tenant_id == invoice.tenant_id, tenants.c.suspended_reason == "payment_required"
                        )
                        .values(status="active", suspended_reason=None)
                    )
                return "paid"
            if event_type == "invoice.payment_failed":
                if invoice.status != "paid":
                    con.execute(
                        update(t)
                        .where(t.c.invoice_id == invoice.invoice_id)
                        .values(status="payment_failed", updated_at=now)
                    )
                    _suspend(con, invoice.tenant_id)
                return "payment_failed"
            return "ignored"

    def suspend_overdue(self, now: datetime, grace_days: int) -> list[str]:
        """Suspend tenants with a finalized invoice unpaid past the grace period. Returns their ids."""
        cutoff = now - timedelta(days=grace_days)
        t = invoice_states
        with self.store.engine.begin() as con:
            rows = con.execute(
                select(t.c.tenant_id).where(t.c.status.in_(("finalized", "payment_failed")), t.c.finalized_at < cutoff)
            ).all()
            suspended = []
            for tenant_id in sorted({r.tenant_id for r in rows}):
                if _suspend(con, tenant_id):
                    suspended.append(tenant_id)
            return suspended


def _suspend(con, tenant_id: str) -> bool:
    result = con.execute(
        update(tenants)
        .where(tenants.c.tenant_id == tenant_id, tenants.c.status == "active")
        .values(status="suspended", suspended_reason="payment_required")
    )
    return result.rowcount == 1


def _overdue(con, tenant_id: str, now: datetime, exclude: str) -> bool:
    t = invoice_states
    rows = con.execute(
        select(t.c.invoice_id).where(
            t.c.tenant_id == tenant_id, t.c.invoice_id != exclude, t.c.status == "payment_failed"
        )
    ).first()
    return rows is not None
