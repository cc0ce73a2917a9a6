"""The catalog: meters, plans, model prices, credit rules, top-up packs.

A catalog is a TOML file. The shipped one (`chatmeter/catalog.toml`) holds the defaults; an operator's file
overrides it. Every version carries `effective_from`, and every version ever loaded is archived under
`<data_dir>/catalog/`, so a past period bills on the rules then in force.
"""

import hashlib
import logging
import tomllib
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

SHIPPED_CATALOG = Path(__file__).with_name("catalog.toml")
METERS = ("tokens", "requests", "embedding_tokens", "credits")


class CatalogError(ValueError):
    """A catalog that cannot be used; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Meter(_Strict):
    description: str = ""
    unit: str = "unit"


_NO_CREDITS = Decimal(0)


class CreditRules(_Strict):
    """Credits per event: base credits of its kind times its model's multiplier.

    Known before the call, so a credit hold is exact; server-side tool executions are events of their own.
    """

    base: dict[Literal["chat", "embedding", "tool_call"], Decimal] = {}
    model_multipliers: dict[str, Decimal] = {}

    def for_event(self, kind: str, model: str) -> Decimal:
        base = self.base.get(kind)
        if base is None:
            return _NO_CREDITS
        multiplier = self.model_multipliers.get(model)
        return base if multiplier is None else base * multiplier


class Limit(_Strict):
    meter: Literal["tokens", "requests", "embedding_tokens", "credits"]
    window: Literal["day", "month"]
    scope: Literal["tenant", "end_user", "key"] = "tenant"
    included: Decimal = Field(ge=0)
    # Soft: alerts and warnings from this many units. Hard: refused past it; none means overage is billed.
    soft: Decimal | None = Field(default=None, ge=0)
    hard: Decimal | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _order(self) -> "Limit":
        if self.hard is not None and self.hard < self.included:
            raise ValueError(f"{self.meter}/{self.window}: hard limit {self.hard} below included {self.included}")
        return self


class Tier(_Strict):
    up_to: Decimal | None = None  # None: the last, open tier
    unit_price: Decimal = Decimal(0)
    flat_fee: Decimal = Decimal(0)


class Overage(_Strict):
    meter: Literal["tokens", "requests", "embedding_tokens", "credits"]
    window: Literal["day", "month"] = "month"
    charge_model: Literal["flat", "per_unit", "graduated", "volume", "package"]
    unit_price: Decimal | None = None
    tiers: list[Tier] = []
    package_size: int | None = Field(default=None, gt=0)
    package_price: Decimal | None = None
    flat_amount: Decimal | None = None

    @model_validator(mode="after")
    def _fields(self) -> "Overage":
        need = {
            "flat": ("flat_amount",),
            "per_unit": ("unit_price",),
            "package": ("package_size", "package_price"),
            "graduated": (),
            "volume": (),
        }[self.charge_model]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"{self.charge_model} overage on {self.meter} needs {', '.join(missing)}")
        if self.charge_model in ("graduated", "volume"):
            if not self.tiers or self.tiers[-1].up_to is not None:
                raise ValueError(f"{self.charge_model} overage on {self.meter} needs tiers ending in an open one")
            bounds = [t.up_to for t in self.tiers[:-1]]
            if any(b is None for b in bounds) or bounds != sorted(bounds):
                raise ValueError(f"{self.charge_model} tiers on {self.meter} must ascend")
        return self


class Plan(_Strict):
    name: str
    description: str = ""
    monthly_fee: Decimal = Field(ge=0)
    # subscription: the fee plus overage; cost_plus: the fee plus provider cost times the margin.
    pricing: Literal["subscription", "cost_plus"] = "subscription"
    limits: list[Limit] = []
    overage: list[Overage] = []
    features: list[str] = []

    def month_limit(self, meter: str) -> Limit | None:
        return next((x for x in self.limits if x.meter == meter and x.window == "month" and x.scope == "tenant"), None)


class ModelPrice(_Strict):
    """An operator's price for a model, per million tokens; overrides genai-prices."""

    provider: str = "custom"
    input_mtok: Decimal = Field(ge=0)
    output_mtok: Decimal = Field(ge=0)
    cache_read_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_mtok: Decimal | None = Field(default=None, ge=0)


class TopupPack(_Strict):
    meter: Literal["tokens", "requests", "embedding_tokens", "credits"] = "tokens"
    units: int = Field(gt=0)
    price: Decimal = Field(ge=0)


class Catalog(_Strict):
    version: str
    effective_from: date
    currency: str = "USD"
    margin: Decimal = Field(gt=0)
    default_plan: str = "free"
    meters: dict[str, Meter]
    credits: CreditRules = CreditRules()
    plans: dict[str, Plan]
    models: dict[str, ModelPrice] = {}
    topup_packs: dict[str, TopupPack] = {}
    # Models the simulated provider answers when a request names none it knows.
    default_model: str = "gpt-4o-mini"

    @model_validator(mode="after")
    def _references(self) -> "Catalog":
        unknown = set(self.meters) - set(METERS)
        if unknown:
            raise ValueError(f"unknown meters {sorted(unknown)}; known: {', '.join(METERS)}")
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not a plan")
        for pid, plan in self.plans.items():
            for item in [*plan.limits, *plan.overage]:
                if item.meter not in self.meters:
                    raise ValueError(f"plan {pid!r} uses meter {item.meter!r}, which the catalog does not define")
            seen = [(x.meter, x.window, x.scope) for x in plan.limits]
            if len(seen) != len(set(seen)):
                raise ValueError(f"plan {pid!r} has two limits on the same meter, window and scope")
        return self

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def plan(self, plan_id: str) -> Plan:
        try:
            return self.plans[plan_id]
        except KeyError:
            raise CatalogError(f"unknown plan {plan_id!r}; plans: {', '.join(self.plans)}") from None


def parse_catalog(text: str, source: str = "catalog") -> Catalog:
    try:
        return Catalog.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise CatalogError(f"{source}: {problems}") from None


def load_catalog(path: Path) -> Catalog:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from None
    return parse_catalog(text, str(path))


def archive(catalog: Catalog, text: str, catalog_dir: Path) -> Path:
    """Keep every version ever in force, named by effective date and digest, for the pipeline."""
    catalog_dir.mkdir(parents=True, exist_ok=True)
    target = catalog_dir / f"{catalog.effective_from.isoformat()}_{catalog.digest}.toml"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return target


def archived_versions(catalog_dir: Path) -> list[tuple[Catalog, datetime]]:
    """Every archived version, oldest effective date first, with the time it was archived."""
    versions = []
    for path in sorted(catalog_dir.glob("*.toml")):
        try:
            versions.append((load_catalog(path), datetime.fromtimestamp(path.stat().st_mtime, UTC)))
        except CatalogError as exc:
            log.error("skipping archived catalog: %s", exc)
    return sorted(versions, key=lambda v: (v[0].effective_from, v[1]))


class CatalogStore:
    """The catalog in force, reloadable without a restart; a bad file leaves the old one in force."""

    def __init__(self, operator_path: Path | None, catalog_dir: Path):
        self.operator_path = operator_path
        self.catalog_dir = catalog_dir
        self._mtime: float | None = None
        self.current = self._load()

    def _source(self) -> Path:
        if self.operator_path is not None and self.operator_path.exists():
            return self.operator_path
        return SHIPPED_CATALOG

    def _load(self) -> Catalog:
        source = self._source()
        text = source.read_text() if source.exists() else ""
        catalog = parse_catalog(text, str(source))
        archive(catalog, text, self.catalog_dir)
        self._mtime = source.stat().st_mtime
        return catalog

    def reload(self) -> Catalog:
        """Load the file again; raises CatalogError (and keeps the old catalog) when it is invalid."""
        try:
            self.current = self._load()
        except CatalogError:
            self._mtime = self._source().stat().st_mtime if self._source().exists() else None
            raise
        log.info("catalog %s (effective %s) in force", self.current.version, self.current.effective_from)
        return self.current

    def reload_if_changed(self) -> bool:
        source = self._source()
        try:
            mtime = source.stat().st_mtime
        except OSError:
            return False
        if mtime == self._mtime:
            return False
        try:
            self.reload()
        except CatalogError as exc:
            log.error("catalog not reloaded, the previous one stays in force: %s", exc)
            return False
        return True
