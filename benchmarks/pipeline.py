"""The pipeline on a synthetic log (default 10 million events over 30 days and 1,000 tenants, written the way
serving writes it): a full build, the same build over a one-event log (the fixed cost of dbt and Dagster),
a bare DuckDB GROUP BY over the same Parquet, and one new day on top of the history. Every figure is a whole
`chatmeter pipeline run` (every asset, one run); the new day's run re-processes only that day's partition of the
daily models. Each is the median of BENCH_PIPELINE_REPEATS runs; the one-event run alternates with the others (its
median over all of them is fixed_s), so that drift in the machine's speed moves both alike."""

import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from chatmeter.settings import Settings

EVENTS = int(os.environ.get("BENCH_PIPELINE_EVENTS", "10000000"))
TENANTS = int(os.environ.get("BENCH_PIPELINE_TENANTS", "1000"))
REPEATS = int(os.environ.get("BENCH_PIPELINE_REPEATS", "3"))
DAYS = 30
AS_OF = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _seconds(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _median_s(run: Callable[[], None], repeats: int = REPEATS) -> float:
    return statistics.median(_seconds(run) for _ in range(repeats))


def _alternating(fixed: Callable[[], None], run: Callable[[], None], fixed_times: list[float]) -> list[float]:
    """`run`'s times, REPEATS runs, each after a run of `fixed` (its times appended to fixed_times): drift in
    the machine's speed then moves both alike."""
    times = []
    for _ in range(REPEATS):
        fixed_times.append(_seconds(fixed))
        times.append(_seconds(run))
    return times


def _pipeline(settings: Settings, as_of: datetime, days: tuple[date, date] | None = None) -> Callable[[], None]:
    from orchestration.run import run_pipeline

    def run() -> None:
        if not run_pipeline(settings, as_of=as_of, days=days):
            raise RuntimeError("the pipeline failed")

    return run


def _log(data_dir: Path, events: int, tenants: int) -> Settings:
    from orchestration.benchmark import write_log

    settings = Settings(data_dir=data_dir, _env_file=None)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_log(settings, events, tenants, AS_OF.date() - timedelta(days=DAYS - 1), DAYS)
    return settings


def _raw_groupby(settings: Settings) -> None:
    con = duckdb.connect()
    con.execute(
        "select tenant_id, cast(occurred_at as date) as day, model, count(*), sum(input_tokens), sum(output_tokens) "
        f"from read_parquet('{settings.events_dir}/**/*.parquet', hive_partitioning = true) group by all"
    ).fetchall()
    con.close()


def bench_pipeline(workdir: Path) -> dict:
    fixed = _pipeline(_log(workdir / "pipeline-one", 1, 1), AS_OF)
    fixed()  # the first run parses the dbt project for this data dir: not part of any figure
    fixed_times: list[float] = []
    settings = _log(workdir / "pipeline-full", EVENTS, TENANTS)
    full_times = _alternating(fixed, _pipeline(settings, AS_OF), fixed_times)
    raw_s = _median_s(lambda: _raw_groupby(settings), max(REPEATS, 5))
    # One new day on top of the history, the way the daily run sees it: only that day re-processed.
    from orchestration.benchmark import write_log

    next_day = AS_OF + timedelta(days=1)
    write_log(settings, EVENTS // DAYS, TENANTS, next_day.date(), 1, seed=11)
    new_day = _pipeline(settings, next_day, (next_day.date(), next_day.date()))
    incremental_times = _alternating(fixed, new_day, fixed_times)
    fixed_s = statistics.median(fixed_times)
    full_s, incremental_s = statistics.median(full_times), statistics.median(incremental_times)
    return {
        "pipeline.events": EVENTS,
        "pipeline.tenants": TENANTS,
        "pipeline.repeats": REPEATS,
        "pipeline.full_build_s": round(full_s, 1),
        "pipeline.fixed_s": round(fixed_s, 1),
        "pipeline.raw_groupby_s": round(raw_s, 2),
        "pipeline.full_vs_raw_ratio": round((full_s - fixed_s) / raw_s, 2),
        "pipeline.incremental_s": round(incremental_s, 1),
        "pipeline.incremental_vs_full_ratio": round((incremental_s - fixed_s) / (full_s - fixed_s), 3),
        # Every run, in order: the one-event runs vary by seconds from run to run (dbt and Dagster start-up),
        # as much as a new day's work costs; a negative ratio means the new day was lost in that noise.
        "pipeline.fixed_runs_s": [round(t, 1) for t in fixed_times],
        "pipeline.full_runs_s": [round(t, 1) for t in full_times],
        "pipeline.incremental_runs_s": [round(t, 1) for t in incremental_times],
    }
