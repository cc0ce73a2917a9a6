"""Forecasts per tenant and meter for the current billing month, backtested against a naive run-rate."""

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chatmeter.billing import plan_covers, plan_month_cost
from chatmeter.catalog import Catalog
from chatmeter.forecast import TRAILING_DAYS, as_decimal, days_until, naive_run_rates, project_many, row_sums
from chatmeter.windows import billing_month
from orchestration.defs.ingest.metadata import catalog_versions
from orchestration.resources import ChatmeterResource
from orchestration.warehouse import connect

METERS = ("tokens", "requests", "embedding_tokens", "credits")
BACKTEST_CUTOFFS = (7, 14, 21)
BACKTEST_BATCH = 50_000  # points projected at once: bounds the arrays' memory on long histories

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
TIMESTAMP = pa.timestamp("us", tz="UTC")


def catalog_at(versions: list[tuple[Catalog, datetime]], day: date) -> Catalog:
    in_force = [c for c, _ in versions if c.effective_from <= day]
    return in_force[-1] if in_force else versions[0][0]


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


class DailyUsage:
    """Every tenant's daily totals as arrays: `values[k, t, d]` is series k (the METERS, then provider cost) of
    tenant t on day d, days counted from `first_day` to today (zero on a day without usage); `first_used[t]` is
    the tenant's first day with usage (-1 for none)."""

    def __init__(self, values: np.ndarray, first_used: np.ndarray, first_day: date):
        self.values, self.first_used, self.first_day = values, first_used, first_day

    @property
    def days(self) -> int:
        return self.values.shape[2]

    def window(self, k: int, tenants: np.ndarray, start: np.ndarray, width: int, length: np.ndarray) -> np.ndarray:
        """Series k of each tenant from day `start` on, `width` days wide, zeros from `length` on (or past today)."""
        column = start[:, None] + np.arange(width)
        inside = (np.arange(width) < length[:, None]) & (column < self.days) & (column >= 0)
        return np.where(inside, self.values[k, tenants[:, None], np.clip(column, 0, self.days - 1)], 0.0)

    def history_tail(self, k: int, tenants: np.ndarray, end: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The last 2 x TRAILING_DAYS days of series k before day `end`, from day `start` at the earliest."""
        width = 2 * TRAILING_DAYS
        column = end[:, None] - width + np.arange(width)
        inside = (column >= start[:, None]) & (column >= 0)
        return np.where(inside, self.values[k, tenants[:, None], np.clip(column, 0, self.days - 1)], 0.0)


def load_daily_usage(con, tenant_ids: list[str], today: date, earliest: date) -> DailyUsage:
    """Usage per tenant and day up to today (from int_tenant_daily_usage: fct_daily_usage summed per tenant and
    day, the same sums), from `earliest` or the first day with usage if that is earlier."""
    con.register("forecast_tenants", pa.table({"tenant_id": tenant_ids, "t": np.arange(len(tenant_ids))}))
    usage = con.execute(
        "select t, datediff('day', ?::date, usage_date) as d, sum(tokens)::double, sum(requests)::double, "
        "sum(embedding_tokens)::double, sum(credits)::double, sum(billable_cost_usd)::double "
        "from int_tenant_daily_usage join forecast_tenants using (tenant_id) where usage_date <= ? group by all",
        [today, today],
    ).fetchnumpy()
    con.unregister("forecast_tenants")
    columns = list(usage.values())
    tenants, offset = columns[0].astype(np.int64), columns[1].astype(np.int64)  # offset: days after today (<= 0)
    days = 1 + max((today - earliest).days, int(-offset.min()) if len(offset) else 0)
    values = np.zeros((len(columns) - 2, len(tenant_ids), days))
    values[:, tenants, offset + days - 1] = np.stack([np.asarray(c, dtype=float) for c in columns[2:]])
    used_on = np.zeros((len(tenant_ids), days), dtype=bool)
    used_on[tenants, offset + days - 1] = True
    first_used = np.where(used_on.any(axis=1), used_on.argmax(axis=1), -1)
    return DailyUsage(values, first_used, today - timedelta(days=days - 1))


def backtest(usage: DailyUsage, anchor_days: list[int], today: date) -> tuple[np.ndarray, np.ndarray]:
    """(model APE, naive APE) for every complete billing month in each tenant's history (from its first day with
    usage) at several cutoff days, for each meter; ordered by tenant, meter, month, cutoff; none where the month
    used nothing."""
    months_of: dict[int, list[tuple[int, int]]] = {}
    point_tenant, point_start, point_cutoff, point_length = [], [], [], []
    for t, anchor_day in enumerate(anchor_days):
        first = int(usage.first_used[t])
        if first < 0:
            continue
        if anchor_day not in months_of:
            # The anchor's billing months that ended by today, as (first day, length) from the data's first day.
            months, origin = [], usage.first_day
            month = billing_month(datetime(origin.year, origin.month, origin.day, tzinfo=UTC), anchor_day)
            while month.end.date() <= today:
                start = (month.start.date() - origin).days
                months.append((start, (month.end.date() - origin).days - start))
                month = billing_month(month.end, anchor_day)
            months_of[anchor_day] = months
        for start, length in months_of[anchor_day]:
            if start < first:
                continue
            for cutoff in BACKTEST_CUTOFFS:
                if cutoff < length:
                    point_tenant.append(t)
                    point_start.append(start)
                    point_cutoff.append(cutoff)
                    point_length.append(length)
    if not point_tenant:
        return np.zeros(0), np.zeros(0)
    tenants, starts = np.array(point_tenant), np.array(point_start)
    cutoffs, lengths = np.array(point_cutoff), np.array(point_length)
    model, naive, measured = (np.zeros((len(METERS), len(tenants))) for _ in range(3))
    for k in range(len(METERS)):
        for chunk in range(0, len(tenants), BACKTEST_BATCH):
            at = slice(chunk, chunk + BACKTEST_BATCH)
            t, start, cutoff, length = tenants[at], starts[at], cutoffs[at], lengths[at]
            first = usage.first_used[t]
            actual = row_sums(usage.window(k, t, start, int(length.max()), length))
            month_to_date = usage.window(k, t, start, max(BACKTEST_CUTOFFS), cutoff)
            history = usage.history_tail(k, t, start + cutoff, first)
            p = project_many(history, start + cutoff - first, month_to_date, cutoff, length)
            with np.errstate(divide="ignore", invalid="ignore"):
                model[k, at] = np.abs(p.expected - actual) / np.abs(actual)
                naive[k, at] = np.abs(naive_run_rates(p.used, cutoff, length) - actual) / np.abs(actual)
            measured[k, at] = actual != 0
    # Points are in tenant, month, cutoff order for each meter: interleave the meters within each tenant.
    meter = np.repeat(np.arange(len(METERS)), len(tenants))
    order = np.lexsort((np.tile(np.arange(len(tenants)), len(METERS)), meter, np.tile(tenants, len(METERS))))
    keep = measured.ravel()[order] != 0
    return model.ravel()[order][keep], naive.ravel()[order][keep]


@dg.asset(
    group_name="forecast",
    deps=["int_tenant_daily_usage", "limit_snapshot", "dim_plan_assignments"],
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
    # One read-write connection for reading and writing: a second opening of the warehouse costs more than the
    # reads.
    with connect(settings, read_only=False) as con:
        tenants = con.execute("select tenant_id, anchor_day from stg_tenants").fetchall()
        windows = [billing_month(now, anchor_day) for _, anchor_day in tenants]
        earliest = min((w.start.date() for w in windows), default=today)
        usage = load_daily_usage(con, [t for t, _ in tenants], today, earliest)
        plans = dict(
            con.execute(
                "select tenant_id, plan_id from dim_plan_assignments where effective_from <= ? "
                "qualify row_number() over "
                "(partition by tenant_id order by effective_from desc, assignment_id desc) = 1",
                [now],
            ).fetchall()
        )
        table = forecast_table(tenants, windows, plans, usage, catalog, now)
        con.register("forecast_rows", table)
        con.execute("create or replace table usage_forecasts as select * from forecast_rows")
    model_errors, naive_errors = backtest(usage, [anchor_day for _, anchor_day in tenants], today)
    points = len(model_errors)
    return dg.MaterializeResult(
        metadata={
            "rows": table.num_rows,
            "will_exceed": int(pc.sum(table.column("will_exceed")).as_py() or 0),
            "backtest_points": points,
            # Added in order, as the errors were listed: the same mean to the last bit.
            "backtest_mape_model": float(row_sums(model_errors) / points) if points else None,
            "backtest_mape_naive_run_rate": float(row_sums(naive_errors) / points) if points else None,
        }
    )


def forecast_table(
    tenants: list[tuple[str, int]],
    windows: list,
    plans: dict[str, str],
    usage: DailyUsage,
    catalog: Catalog,
    now: datetime,
) -> pa.Table:
    """Every tenant's current billing month, its meters and provider cost projected at once: one row per tenant
    and meter, tenant by tenant (none for a meter with no usage and no limit)."""
    count, today = len(tenants), usage.days - 1
    every = np.arange(count)
    start = np.array([(w.start.date() - usage.first_day).days for w in windows], dtype=np.int64)
    length = np.array([(w.end.date() - w.start.date()).days for w in windows], dtype=np.int64)
    elapsed = np.array([(now - w.start).total_seconds() / 86400 for w in windows])
    history_start = np.where(usage.first_used >= 0, usage.first_used, start)
    so_far = today + 1 - start  # days of the month to date, today's included
    width = int(so_far.max()) if count else 0
    series = range(len(METERS) + 1)  # the meters, then provider cost
    month_to_date = np.stack([usage.window(k, every, start, width, so_far) for k in series])
    p = project_many(
        np.concatenate([usage.history_tail(k, every, np.full(count, today), history_start) for k in series]),
        np.tile(today - history_start, len(series)),
        month_to_date.reshape(len(series) * count, width),
        np.tile(elapsed, len(series)),
        np.tile(length, len(series)),
    )
    used, expected, low, high, rate = (
        x.reshape(len(series), count) for x in (p.used, p.expected, p.low, p.high, p.daily_rate)
    )
    naive = naive_run_rates(used, elapsed, length)
    peak = np.where(np.arange(width) < so_far[:, None], month_to_date, -np.inf).max(axis=2, initial=-np.inf)

    plan_ids = [plans.get(tenant_id) for tenant_id, _ in tenants]
    limits = {}  # each plan's monthly limit per meter (hard, else included); NaN for none
    for plan_id in set(plan_ids):
        plan = catalog.plans.get(plan_id) if plan_id else None
        found = [plan.month_limit(meter) if plan else None for meter in METERS]
        limits[plan_id] = [np.nan if x is None else float(x.hard if x.hard is not None else x.included) for x in found]
    recommended = [
        recommend(
            catalog,
            dict(zip(METERS, expected[: len(METERS), t].tolist(), strict=True)),
            as_decimal(float(expected[len(METERS), t])),
            dict(zip(METERS, peak[: len(METERS), t].tolist(), strict=True)),
        )
        for t in range(count)
    ]

    # Rows: tenant by tenant, meter by meter.
    limit = np.array([limits[plan_id] for plan_id in plan_ids]).reshape(count, len(METERS))
    has_limit = ~np.isnan(limit)
    meter_rows = [x[: len(METERS)].T.ravel() for x in (used, expected, low, high, naive, rate)]
    keep = has_limit.ravel() | (meter_rows[0] != 0)
    tenant_of_row = pa.array(np.repeat(every, len(METERS))[keep])
    caps, row_used, row_rate = (x[keep].tolist() for x in (limit.ravel(), meter_rows[0], meter_rows[5]))
    until = [None if math.isnan(c) else days_until(c, u, r) for c, u, r in zip(caps, row_used, row_rate, strict=True)]
    epoch, micro = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
    starts = pa.array([(w.start - epoch) // micro for w in windows], pa.int64()).cast(TIMESTAMP)
    ends = pa.array([(w.end - epoch) // micro for w in windows], pa.int64()).cast(TIMESTAMP)
    columns = {
        "tenant_id": pa.array([t for t, _ in tenants], pa.string()).take(tenant_of_row),
        "meter": pa.array(np.tile(np.array(METERS, dtype=object), count)[keep], pa.string()),
        "plan": pa.array(plan_ids, pa.string()).take(tenant_of_row),
        "window_start": starts.take(tenant_of_row),
        "window_end": ends.take(tenant_of_row),
        **{
            name: pa.array(values[keep], pa.float64())
            for name, values in zip(
                ("used", "projected", "projected_low", "projected_high", "naive_projection", "daily_rate"),
                meter_rows,
                strict=True,
            )
        },
        "limit": pa.array(limit.ravel()[keep], pa.float64(), mask=~has_limit.ravel()[keep]),
        "days_until_limit": pa.array(until, pa.float64()),
        "will_exceed": pa.array((has_limit.ravel() & (meter_rows[1] > limit.ravel()))[keep], pa.bool_()),
        "recommended_plan": pa.array(recommended, pa.string()).take(tenant_of_row),
        "as_of": pa.array([(now - epoch) // micro] * int(keep.sum()), pa.int64()).cast(TIMESTAMP),
    }
    return pa.table(columns, schema=FORECAST_SCHEMA)
