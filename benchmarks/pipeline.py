"""The pipeline on a synthetic log (default 10 million events over 30 days and 1,000 tenants, written the way
serving writes it): a full build, the same build over a one-event log (the fixed cost of dbt and Dagster),
a bare DuckDB GROUP BY over the same Parquet, and one new day on top of the history."""

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from chatmeter.settings import Settings

EVENTS = int(os.environ.get("BENCH_PIPELINE_EVENTS", "10000000"))
TENANTS = int(os.environ.get("BENCH_PIPELINE_TENANTS", "1000"))
DAYS = 30
AS_OF = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _full_build(data_dir: Path, events: int, tenants: int) -> tuple[float, Settings]:
    from orchestration.benchmark import write_log
    from orchestration.run import run_pipeline

    settings = Settings(data_dir=data_dir, _env_file=None)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_log(settings, events, tenants, AS_OF.date() - timedelta(days=DAYS - 1), DAYS)
    started = time.perf_counter()
    if not run_pipeline(settings, as_of=AS_OF):
        raise RuntimeError("the pipeline failed")
    return time.perf_counter() - started, settings


def _raw_groupby(settings: Settings) -> float:
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(
        "select tenant_id, cast(occurred_at as date) as day, model, count(*), sum(input_tokens), sum(output_tokens) "
        f"from read_parquet('{settings.events_dir}/**/*.parquet', hive_partitioning = true) group by all"
    ).fetchall()
    con.close()
    return time.perf_counter() - started


def _one_new_day(settings: Settings) -> float:
    import dagster as dg

    from orchestration.benchmark import write_log
    from orchestration.defs.dbt.assets import daily_usage_dbt_assets
    from orchestration.resources import pipeline_resources

    next_day = AS_OF + timedelta(days=1)
    write_log(settings, EVENTS // DAYS, TENANTS, next_day.date(), 1, seed=11)
    resources = pipeline_resources(settings, next_day.isoformat(), stripe_key="unused")
    started = time.perf_counter()
    result = dg.materialize([daily_usage_dbt_assets], partition_key=next_day.date().isoformat(), resources=resources)
    if not result.success:
        raise RuntimeError("the incremental run failed")
    return time.perf_counter() - started


def bench_pipeline(workdir: Path) -> dict:
    fixed_s, _ = _full_build(workdir / "pipeline-one", 1, 1)
    full_s, settings = _full_build(workdir / "pipeline-full", EVENTS, TENANTS)
    raw_s = min(_raw_groupby(settings) for _ in range(3))
    incremental_s = _one_new_day(settings)
    return {
        "pipeline.events": EVENTS,
        "pipeline.tenants": TENANTS,
        "pipeline.full_build_s": round(full_s, 1),
        "pipeline.fixed_s": round(fixed_s, 1),
        "pipeline.raw_groupby_s": round(raw_s, 2),
        "pipeline.full_vs_raw_ratio": round((full_s - fixed_s) / raw_s, 2),
        "pipeline.incremental_s": round(incremental_s, 1),
        "pipeline.incremental_vs_full_ratio": round((incremental_s - fixed_s) / (full_s - fixed_s), 3),
    }
