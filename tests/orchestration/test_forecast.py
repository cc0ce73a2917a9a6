"""The forecasts computed for every tenant at once equal, to the last bit, those of the one-series formula applied
tenant by tenant and meter by meter to fct_daily_usage (the way the asset computed them before)."""

import random
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import numpy as np

from chatmeter.forecast import ape, as_decimal, days_until, naive_run_rate, project, project_many, row_sums
from chatmeter.settings import Settings
from chatmeter.windows import billing_month
from orchestration.defs.forecast.assets import BACKTEST_CUTOFFS, METERS, catalog_at, recommend, usage_forecasts
from orchestration.defs.ingest.metadata import catalog_versions
from tests.orchestration.factories import AS_OF
from tests.orchestration.helpers import asset_metadata, resources


def test_row_sums_add_left_to_right():
    values = [1e16] + [1.0] * 15  # each 1.0 is lost against 1e16 one at a time, not when added up first
    assert row_sums(np.array([values]))[0] == sum(values) != np.sum(values)


def test_project_many_equals_project_series_by_series():
    rng = random.Random(5)
    cases = []
    for _ in range(300):
        history = [
            float(rng.choice([0, rng.randint(0, 9000)])) for _ in range(rng.choice([0, 1, 2, 3, 13, 14, 29, 60]))
        ]
        month_to_date = [float(rng.randint(0, 9000)) for _ in range(rng.randint(1, 31))]
        cases.append((history, month_to_date, rng.choice([0.0, 0.5, 7.0, rng.random() * 30]), rng.choice([28, 31])))
    tails = np.zeros((len(cases), 28))
    month = np.zeros((len(cases), 31))
    for i, (history, month_to_date, _, _) in enumerate(cases):
        if history[-28:]:
            tails[i, 28 - len(history[-28:]) :] = history[-28:]
        month[i, : len(month_to_date)] = month_to_date
    p = project_many(
        tails,
        np.array([len(h) for h, _, _, _ in cases]),
        month,
        np.array([e for _, _, e, _ in cases]),
        np.array([d for _, _, _, d in cases], dtype=float),
    )
    for i, (history, month_to_date, elapsed, days) in enumerate(cases):
        one = project(history, month_to_date, elapsed, days)
        assert (one.used, one.expected, one.low, one.high, one.daily_rate) == (
            p.used[i],
            p.expected[i],
            p.low[i],
            p.high[i],
            p.daily_rate[i],
        )


def daily_series(daily: dict[date, float], start: date, end: date) -> list[float]:
    return [daily.get(start + timedelta(days=i), 0.0) for i in range((end - start).days)]


def reference(settings: Settings, now: datetime) -> tuple[list[dict], list[tuple[float, float]]]:
    """The forecast rows and backtest errors, tenant by tenant with the one-series functions, from fct_daily_usage."""
    today = now.date()
    catalog = catalog_at(catalog_versions(settings), today)
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    con.execute("set TimeZone = 'UTC'")
    tenants = con.execute("select tenant_id, anchor_day from stg_tenants").fetchall()
    usage = con.execute(
        "select tenant_id, usage_date, sum(tokens)::double, sum(requests)::double, sum(embedding_tokens)::double, "
        "sum(credits)::double, sum(provider_cost_usd)::double from fct_daily_usage where usage_date <= ? group by all",
        [today],
    ).fetchall()
    plans = dict(
        con.execute(
            "select tenant_id, plan_id from dim_plan_assignments where effective_from <= ? qualify row_number() "
            "over (partition by tenant_id order by effective_from desc, assignment_id desc) = 1",
            [now],
        ).fetchall()
    )
    con.close()
    daily: dict[tuple[str, str], dict[date, float]] = {}
    for tenant_id, day, *values in usage:
        for series, value in zip((*METERS, "cost"), values, strict=True):
            daily.setdefault((tenant_id, series), {})[day] = value

    rows, errors = [], []
    for tenant_id, anchor_day in tenants:
        window = billing_month(now, anchor_day)
        start, end = window.start.date(), window.end.date()
        length, elapsed = (end - start).days, (now - window.start).total_seconds() / 86400
        plan = catalog.plans.get(plans.get(tenant_id))
        out, projected, peak = {}, {}, {}
        for series in (*METERS, "cost"):
            days = daily.get((tenant_id, series), {})
            mtd = daily_series(days, start, today + timedelta(days=1))
            p = project(daily_series(days, min(days) if days else start, today), mtd, elapsed, length)
            out[series], projected[series], peak[series] = (
                (p, naive_run_rate(mtd, elapsed, length)),
                p.expected,
                max(mtd),
            )
            if series == "cost" or not days:
                continue
            first = min(days)
            month = billing_month(datetime(first.year, first.month, first.day, tzinfo=UTC), anchor_day)
            while month.end.date() <= today:
                m_start, m_end = month.start.date(), month.end.date()
                actual = sum(daily_series(days, m_start, m_end))
                for cutoff in BACKTEST_CUTOFFS:
                    if m_start >= first and cutoff < (m_end - m_start).days:
                        cut = m_start + timedelta(days=cutoff)
                        m_mtd = daily_series(days, m_start, cut)
                        model = project(daily_series(days, first, cut), m_mtd, cutoff, (m_end - m_start).days)
                        naive = naive_run_rate(m_mtd, cutoff, (m_end - m_start).days)
                        if actual != 0:
                            errors.append((ape(model.expected, actual), ape(naive, actual)))
                month = billing_month(month.end, anchor_day)
        cost = projected.pop("cost")
        recommended = recommend(catalog, projected, as_decimal(cost), {m: peak[m] for m in METERS})
        for meter in METERS:
            (p, naive), found = out[meter], plan.month_limit(meter) if plan else None
            if p.used == 0 and found is None:
                continue
            limit = None if found is None else float(found.hard if found.hard is not None else found.included)
            rows.append(
                dict(
                    tenant_id=tenant_id,
                    meter=meter,
                    plan=plans.get(tenant_id),
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
    return rows, errors


def test_forecasts_equal_the_one_series_formula_tenant_by_tenant(built_copy):
    settings, _ = built_copy
    for now in (AS_OF, AS_OF + timedelta(days=3, hours=7)):
        result = dg.materialize([usage_forecasts], resources=resources(settings, now))
        assert result.success
        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        rows = con.sql("select * from usage_forecasts").to_arrow_table().to_pylist()
        con.close()
        want, errors = reference(settings, now)
        assert rows == want and len(rows) > 4
        meta = asset_metadata(result, "usage_forecasts")
        assert meta["backtest_points"] == len(errors) > 0
        assert meta["backtest_mape_model"] == sum(a for a, _ in errors) / len(errors)
        assert meta["backtest_mape_naive_run_rate"] == sum(b for _, b in errors) / len(errors)
        assert meta["will_exceed"] == sum(r["will_exceed"] for r in want)
