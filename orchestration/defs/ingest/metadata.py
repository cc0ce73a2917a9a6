"""Export the metadata store and every catalog version to Parquet, the dbt sources `metadata.*`.

DuckDB cannot attach the SQLite store here (no extension downloads), so Python reads the store and writes
typed Parquet; money stays decimal (Arrow decimal128) all the way.
"""

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from chatmeter import store as st
from chatmeter.catalog import SHIPPED_CATALOG, Catalog, archived_versions, load_catalog
from chatmeter.schemas import UTC_TS
from chatmeter.settings import Settings

PRICE = pa.decimal128(38, 12)
QUANTITY = pa.decimal128(38, 6)
MONEY = pa.decimal128(38, 9)

SCHEMAS = {
    "tenants": pa.schema(
        [
            ("tenant_id", pa.string()),
            ("name", pa.string()),
            ("status", pa.string()),
            ("anchor_day", pa.int32()),
            ("webhook_url", pa.string()),
            ("stripe_customer_id", pa.string()),
            ("created_at", UTC_TS),
        ]
    ),
    "plan_assignments": pa.schema(
        [
            ("assignment_id", pa.int64()),
            ("tenant_id", pa.string()),
            ("plan", pa.string()),
            ("effective_from", UTC_TS),
            ("created_at", UTC_TS),
        ]
    ),
    "topups": pa.schema(
        [
            ("topup_id", pa.string()),
            ("tenant_id", pa.string()),
            ("meter", pa.string()),
            ("units", pa.int64()),
            ("amount", MONEY),
            ("granted_at", UTC_TS),
            ("expires_at", UTC_TS),
            ("priority", pa.int32()),
            ("source", pa.string()),
        ]
    ),
    "credit_grants": pa.schema(
        [
            ("grant_id", pa.string()),
            ("tenant_id", pa.string()),
            ("amount", MONEY),
            ("granted_at", UTC_TS),
            ("expires_at", UTC_TS),
            ("priority", pa.int32()),
            ("reason", pa.string()),
        ]
    ),
    "invoice_states": pa.schema(
        [
            ("invoice_id", pa.string()),
            ("tenant_id", pa.string()),
            ("period", pa.string()),
            ("status", pa.string()),
            ("total", MONEY),
            ("stripe_invoice_id", pa.string()),
            ("finalized_at", UTC_TS),
            ("updated_at", UTC_TS),
        ]
    ),
    "catalog_versions": pa.schema(
        [
            ("catalog_version_id", pa.string()),
            ("version", pa.string()),
            ("digest", pa.string()),
            ("effective_from", pa.date32()),
            ("archived_at", UTC_TS),
            ("currency", pa.string()),
            ("margin", PRICE),
            ("default_plan", pa.string()),
        ]
    ),
    "catalog_plans": pa.schema(
        [
            ("catalog_version_id", pa.string()),
            ("plan_id", pa.string()),
            ("plan_name", pa.string()),
            ("monthly_fee", PRICE),
            ("pricing", pa.string()),
        ]
    ),
    "catalog_limits": pa.schema(
        [
            ("catalog_version_id", pa.string()),
            ("plan_id", pa.string()),
            ("meter", pa.string()),
            ("window_kind", pa.string()),
            ("scope", pa.string()),
            ("included", QUANTITY),
            ("soft", QUANTITY),
            ("hard", QUANTITY),
        ]
    ),
    "catalog_overage": pa.schema(
        [
            ("catalog_version_id", pa.string()),
            ("plan_id", pa.string()),
            ("meter", pa.string()),
            ("window_kind", pa.string()),
            ("charge_model", pa.string()),
            ("unit_price", PRICE),
            ("package_size", pa.int64()),
            ("package_price", PRICE),
            ("flat_amount", PRICE),
        ]
    ),
    "catalog_overage_tiers": pa.schema(
        [
            ("catalog_version_id", pa.string()),
            ("plan_id", pa.string()),
            ("meter", pa.string()),
            ("tier_number", pa.int32()),
            ("lower_bound", QUANTITY),
            ("up_to", QUANTITY),
            ("unit_price", PRICE),
            ("flat_fee", PRICE),
        ]
    ),
    "catalog_model_prices": pa.schema(
        [
            ("catalog_version_id", pa.string()),
            ("model", pa.string()),
            ("provider", pa.string()),
            ("input_mtok", PRICE),
            ("output_mtok", PRICE),
            ("cache_read_mtok", PRICE),
            ("cache_write_mtok", PRICE),
        ]
    ),
    "catalog_topup_packs": pa.schema(
        [
            ("catalog_version_id", pa.string()),
            ("pack_id", pa.string()),
            ("meter", pa.string()),
            ("units", pa.int64()),
            ("price", PRICE),
        ]
    ),
}

# The shipped catalog counts as archived before any operator file of the same effective date.
SHIPPED_ARCHIVED_AT = datetime(1970, 1, 1, tzinfo=UTC)


def catalog_versions(settings: Settings) -> list[tuple[Catalog, datetime]]:
    """Every catalog version to bill with: the archived ones, plus the shipped one if it is not archived."""
    versions = archived_versions(settings.catalog_dir) if settings.catalog_dir.exists() else []
    known = {c.digest for c, _ in versions}
    shipped = load_catalog(SHIPPED_CATALOG)
    if shipped.digest not in known:
        versions.append((shipped, SHIPPED_ARCHIVED_AT))
    # An operator's catalog the API has not loaded (and so not archived) yet still counts from its date.
    operator = settings.catalog_path
    if operator is not None and operator.exists():
        catalog = load_catalog(operator)
        if catalog.digest not in known | {shipped.digest}:
            versions.append((catalog, datetime.fromtimestamp(operator.stat().st_mtime, UTC)))
    return sorted(versions, key=lambda v: (v[0].effective_from, v[1]))


def version_id(catalog: Catalog) -> str:
    return f"{catalog.effective_from.isoformat()}_{catalog.digest}"


def _dec(value) -> Decimal | None:
    return None if value is None else Decimal(value)


def catalog_rows(versions: list[tuple[Catalog, datetime]]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {name: [] for name in SCHEMAS if name.startswith("catalog_")}
    seen = set()
    for catalog, archived_at in versions:
        vid = version_id(catalog)
        if vid in seen:
            continue
        seen.add(vid)
        rows["catalog_versions"].append(
            dict(
                catalog_version_id=vid,
                version=catalog.version,
                digest=catalog.digest,
                effective_from=catalog.effective_from,
                archived_at=archived_at,
                currency=catalog.currency,
                margin=catalog.margin,
                default_plan=catalog.default_plan,
            )
        )
        for plan_id, plan in catalog.plans.items():
            rows["catalog_plans"].append(
                dict(
                    catalog_version_id=vid,
                    plan_id=plan_id,
                    plan_name=plan.name,
                    monthly_fee=plan.monthly_fee,
                    pricing=plan.pricing,
                )
            )
            for limit in plan.limits:
                rows["catalog_limits"].append(
                    dict(
                        catalog_version_id=vid,
                        plan_id=plan_id,
                        meter=limit.meter,
                        window_kind=limit.window,
                        scope=limit.scope,
                        included=limit.included,
                        soft=limit.soft,
                        hard=limit.hard,
                    )
                )
            for overage in plan.overage:
                rows["catalog_overage"].append(
                    dict(
                        catalog_version_id=vid,
                        plan_id=plan_id,
                        meter=overage.meter,
                        window_kind=overage.window,
                        charge_model=overage.charge_model,
                        unit_price=overage.unit_price,
                        package_size=overage.package_size,
                        package_price=overage.package_price,
                        flat_amount=overage.flat_amount,
                    )
                )
                lower = Decimal(0)
                for number, tier in enumerate(overage.tiers, start=1):
                    rows["catalog_overage_tiers"].append(
                        dict(
                            catalog_version_id=vid,
                            plan_id=plan_id,
                            meter=overage.meter,
                            tier_number=number,
                            lower_bound=lower,
                            up_to=tier.up_to,
                            unit_price=tier.unit_price,
                            flat_fee=tier.flat_fee,
                        )
                    )
                    lower = tier.up_to if tier.up_to is not None else lower
        for model, price in catalog.models.items():
            rows["catalog_model_prices"].append(
                dict(
                    catalog_version_id=vid,
                    model=model,
                    provider=price.provider,
                    input_mtok=price.input_mtok,
                    output_mtok=price.output_mtok,
                    cache_read_mtok=price.cache_read_mtok,
                    cache_write_mtok=price.cache_write_mtok,
                )
            )
        for pack_id, pack in catalog.topup_packs.items():
            rows["catalog_topup_packs"].append(
                dict(catalog_version_id=vid, pack_id=pack_id, meter=pack.meter, units=pack.units, price=pack.price)
            )
    return rows


def store_rows(store: st.Store) -> dict[str, list[dict]]:
    tables = {
        "tenants": st.tenants,
        "plan_assignments": st.plan_assignments,
        "topups": st.topups,
        "credit_grants": st.credit_grants,
        "invoice_states": st.invoice_states,
    }
    out = {}
    with store.engine.connect() as con:
        for name, table in tables.items():
            columns = SCHEMAS[name].names
            out[name] = [{c: row._mapping[c] for c in columns} for row in con.execute(select(table))]
    return out


def write_table(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    """Write atomically, so a dbt run reading the previous export never sees a partial file."""
    table = pa.Table.from_pylist(rows, schema=schema)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def export_metadata(settings: Settings, out_dir: Path) -> dict[str, int]:
    """Write every metadata table as `<out_dir>/<name>.parquet`; returns the row count of each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = st.Store(settings.metadata_url)
    try:
        rows = {**store_rows(store), **catalog_rows(catalog_versions(settings))}
    finally:
        store.engine.dispose()
    for name, schema in SCHEMAS.items():
        write_table(rows[name], schema, out_dir / f"{name}.parquet")
    return {name: len(r) for name, r in rows.items()}
