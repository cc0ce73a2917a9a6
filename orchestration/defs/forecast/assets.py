"""Forecasts per tenant and meter for the current billing month, backtested against a naive run-rate."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import pyarrow as pa

from chatmeter.billing import plan_covers, plan_month_cost
from chatmeter.catalog import Catalog
from chatmeter.forecast import ape, as_decimal, days_until, naive_run_rate, project
from chatmeter.windows import billing_month
from orchestration.defs.ingest.metadata import catalog_versions
from orchestration.resources import ChatmeterResource
from orchestration.warehouse import connect

METERS = ("tokens", "requests", "embedding_tokens", "credits")
BACKTEST_CUTOFFS = (7, 14, 21)

FORECAST_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("meter", pa.string()),
        ("plan", pa.string()),
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("used", pa.float64()),
        ("projected", pa.float64()),
        ("projected_low", pa.float64()),
        ("projected_high", pa.float64()),
        ("naive_projection", pa.float64()),
        ("daily_rate", pa.float64()),
        ("limit", pa.float64()),
        ("days_until_limit", pa.float64()),
        ("will_exceed", pa.bool_()),
        ("recommended_plan", pa.string()),
        ("as_of", pa.timestamp("us", tz="UTC")),
    ]
)


def catalog_at(versions: list[tuple[Catalog, datetime]], day: date) -> Catalog:
    in_force = [c for c, _ in versions if c.effective_from <= day]
    return in_force[-1] if in_force else versions[0][0]


def daily_series(daily: dict[date, float], start: date, end: date) -> list[float]:
    return [daily.get(start + timedelta(days=i), 0.0) for i in range((end - start).days)]


def recommend(
    catalog: Catalog, projected: dict[str, float], projected_cost: Decimal, peak_day: dict[str, float] | None = None
) -> str | None:
    """The cheapest plan whose hard limits cover the projected month (and its busiest day so far), priced
    as an invoice would price that month."""
    usage = {m: as_decimal(v) for m, v in projected.items()}
    peak = {m: as_decimal(v) for m, v in (peak_day or {}).items()}
    best = None
    for plan_id, plan in catalog.plans.items():
        if not plan_covers(plan, usage, peak):
            continue
        cost = plan_month_cost(plan, usage, catalog.margin, projected_cost)
        if best is None or cost < best[0]:
            best = (cost, plan_id)
    return best[1] if best else None


def backtest(daily: dict[date, float], anchor_day: int, today: date) -> list[tuple[float, float]]:
    """(model APE, naive APE) for every complete billing month in the history, at several cutoff days."""
    out = []
    if not daily:
        return out
    first = min(daily)
    month = billing_month(datetime(first.year, first.month, first.day, tzinfo=UTC), anchor_day)
    while month.end.date() <= today:
        start, end = month.start.date(), month.end.date()
        length = (end - start).days
        actual = sum(daily_series(daily, start, end))
        if start >= first:
            for cutoff in BACKTEST_CUTOFFS:
                if cutoff >= length:
                    continue
                history = daily_series(daily, first, start + timedelta(days=cutoff))
                mtd = daily_series(daily, start, start + timedelta(days=cutoff))
                model = project(history, mtd, cutoff, length).expected
                naive = naive_run_rate(mtd, cutoff, length)
                a, b = ape(model, actual), ape(naive, actual)
                if a is not None and b is not None:
                    out.append((a, b))
        month = billing_month(month.end, anchor_day)
    return out


@dg.asset(
    group_name="forecast",
    deps=["fct_daily_usage", "limit_snapshot", "dim_plan_assignments"],
    description="Month-end projections per tenant and meter with an 80% interval, days until the limit, "
    "a will-exceed flag and the cheapest covering plan; backtested against the naive run-rate.",
    pool="warehouse",
)
def usage_forecasts(chatmeter: ChatmeterResource) -> dg.MaterializeResult:
    settings = chatmeter.settings()
    now = chatmeter.now()
    today = now.date()
    versions = catalog_versions(settings)
    catalog = catalog_at(versions, today)
    with connect(settings) as con:
        tenants = con.execute("select tenant_id, anchor_day from stg_tenants").fetchall()
        usage = con.execute(
            "select tenant_id, usage_date, sum(tokens)::double, sum(requests)::double, "
            "sum(embedding_tokens)::double, sum(credits)::double, sum(provider_cost_usd)::double "
            "from fct_daily_usage where usage_date <= ? group by all",
            [today],
        ).fetchall()
        plans = dict(
            con.execute(
                "select tenant_id, plan_id from dim_plan_assignments where effective_from <= ? "
                "qualify row_number() over "
                "(partition by tenant_id order by effective_from desc, assignment_id desc) = 1",
                [now],
            ).fetchall()
        )
    daily: dict[tuple[str, str], dict[date, float]] = {}
    cost: dict[str, dict[date, float]] = {}
    for tenant_id, day, *values in usage:
        for meter, value in zip(METERS, values[:4], strict=True):
            daily.setdefault((tenant_id, meter), {})[day] = value
        cost.setdefault(tenant_id, {})[day] = values[4]

    rows, errors = [], []
    for tenant_id, anchor_day in tenants:
        window = billing_month(now, anchor_day)
        start, end = window.start.date(), window.end.date()
        length = (end - start).days
        elapsed = (now - window.start).total_seconds() / 86400
        plan_id = plans.get(tenant_id)
        plan = catalog.plans.get(plan_id) if plan_id else None
        projected, projections, peak = {}, {}, {}
        for meter in METERS:
            series = daily.get((tenant_id, meter), {})
            mtd = daily_series(series, start, today + timedelta(days=1))
            history = daily_series(series, min(series) if series else start, today)
            p = project(history, mtd, elapsed, length)
            projections[meter] = (p, naive_run_rate(mtd, elapsed, length))
            projected[meter] = p.expected
            peak[meter] = max(mtd, default=0.0)
            errors += backtest(series, anchor_day, today)
        cost_series = cost.get(tenant_id, {})
        c = project(
            daily_series(cost_series, min(cost_series) if cost_series else start, today),
            daily_series(cost_series, start, today + timedelta(days=1)),
            elapsed,
            length,
        )
        recommended = recommend(catalog, projected, as_decimal(c.expected), peak)
        for meter, (p, naive) in projections.items():
            limit_def = plan.month_limit(meter) if plan else None
            if p.used == 0 and limit_def is None:
                continue
            limit = None
            if limit_def is not None:
                limit = float(limit_def.hard if limit_def.hard is not None else limit_def.included)
            rows.append(
                dict(
                    tenant_id=tenant_id,
                    meter=meter,
                    plan=plan_id,
                    window_start=window.start,
                    window_end=window.end,
                    used=p.used,
                    projected=p.expected,
                    projected_low=p.low,
                    projected_high=p.high,
                    naive_projection=naive,
                    daily_rate=p.daily_rate,
                    limit=limit,
                    days_until_limit=days_until(limit, p.used, p.daily_rate),
                    will_exceed=bool(limit is not None and p.expected > limit),
                    recommended_plan=recommended,
                    as_of=now,
                )
            )
    table = pa.Table.from_pylist(rows, schema=FORECAST_SCHEMA)
    with connect(settings, read_only=False) as con:
        con.register("forecast_rows", table)
        con.execute("create or replace table usage_forecasts as select * from forecast_rows")
    model_mape = sum(a for a, _ in errors) / len(errors) if errors else None
    naive_mape = sum(b for _, b in errors) / len(errors) if errors else None
    return dg.MaterializeResult(
        metadata={
            "rows": len(rows),
            "will_exceed": sum(r["will_exceed"] for r in rows),
            "backtest_points": len(errors),
            "backtest_mape_model": model_mape,
            "backtest_mape_naive_run_rate": naive_mape,
        }
    )
