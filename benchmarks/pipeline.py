"""The pipeline on a synthetic log (default 10 million events over 30 days and 1,000 tenants, written the way
serving writes it): a full build, a bare DuckDB GROUP BY over the same Parquet, and one new day on top of the
history. Every figure is a whole `chatmeter pipeline run` (every asset, one run); the full build processes the
log's 30 days as daily partitions, the new day's run only that day's. Each is the median of
BENCH_PIPELINE_REPEATS runs, and each run alternates with the same build over a log of one event: the same
tenants, as-of time and days (partitions), so that it costs what dbt and Dagster cost whatever the data (fixed_s is
the full build's). Each ratio takes what every run costs above its one-event build, run just before it: drift in
the machine's speed between the runs then cancels.

Each run's `work` is also reported: the time inside it that does the pipeline's work, as Dagster recorded it (every
dbt node's execution time, plus every Python asset's step), without the start-up of Python, Dagster and dbt, whose
spread between identical runs is as large as a new day's work. The `*_by_work` ratios are the same formulas on it.

And each run's `cpu`: the processor time it took (this process and its dbt subprocesses, user + system), which the
host's I/O stalls (fsync) do not reach; the drift of the machine's speed does (identical one-event runs spread by
about a second either way). The `*_by_cpu` ratios are the same formulas on it (the bare GROUP BY's processor time
for full_vs_raw)."""

import os
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from chatmeter.settings import Settings

EVENTS = int(os.environ.get("BENCH_PIPELINE_EVENTS", "10000000"))
TENANTS = int(os.environ.get("BENCH_PIPELINE_TENANTS", "1000"))
REPEATS = int(os.environ.get("BENCH_PIPELINE_REPEATS", "5"))
DAYS = 30
AS_OF = datetime(2026, 11, 20, 12, tzinfo=UTC)


# A run's (wall seconds, work seconds, processor seconds).
Timed = tuple[float, float, float]


def _cpu_s() -> float:
    """Processor time so far of this process and its finished subprocesses (dbt), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _median_s(run: Callable[[], object], repeats: int = REPEATS) -> tuple[float, float]:
    """The median wall and processor seconds of `repeats` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), _cpu_s()
        run()
        walls.append(time.perf_counter() - started)
        cpus.append(_cpu_s() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _alternating(fixed: Callable[[], Timed], run: Callable[[], Timed], fixed_runs: list[Timed]) -> list[Timed]:
    """`run`'s figures, REPEATS runs, each after a run of `fixed` (its figures appended to fixed_runs): drift in
    the machine's speed then moves both alike."""
    runs = []
    for _ in range(REPEATS):
        fixed_runs.append(fixed())
        runs.append(run())
    return runs


def _work_s(result) -> float:
    """dbt's execution time of every node (models and tests) plus the steps of the Python assets. A daily model
    is materialised once per partition of the run, each with the node's one time: counted once."""
    from orchestration.defs.dbt.assets import daily_usage_dbt_assets, warehouse_dbt_assets

    dbt_steps = {daily_usage_dbt_assets.op.name, warehouse_dbt_assets.op.name}
    work, nodes = 0.0, {}
    for event in result.all_events:
        data = event.event_specific_data
        if event.event_type_value == "STEP_SUCCESS" and event.step_key not in dbt_steps:
            work += data.duration_ms / 1000
            continue
        if event.event_type_value == "ASSET_MATERIALIZATION":
            metadata = data.materialization.metadata
        elif event.event_type_value == "ASSET_OBSERVATION":
            metadata = data.asset_observation.metadata
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            metadata = data.metadata
        else:
            continue
        duration, node = metadata.get("Execution Duration"), metadata.get("unique_id")
        if duration is not None and node is not None:
            nodes[node.value] = float(duration.value)
    return work + sum(nodes.values())


def _pipeline(settings: Settings, as_of: datetime, days: tuple[date, date] | None = None) -> Callable[[], Timed]:
    from orchestration.run import materialize_pipeline

    def run() -> Timed:
        started, cpu = time.perf_counter(), _cpu_s()
        result = materialize_pipeline(settings, as_of=as_of, days=days)
        wall, cpu = time.perf_counter() - started, _cpu_s() - cpu
        if not result.success:
            raise RuntimeError("the pipeline failed")
        return wall, _work_s(result), cpu

    return run


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator > 0 else None


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
    # The same builds (the same tenants, plans, catalog, as-of time and days) over a log of one event.
    one = _log(workdir / "pipeline-one", 1, TENANTS)
    days = (AS_OF.date() - timedelta(days=DAYS - 1), AS_OF.date())
    fixed = _pipeline(one, AS_OF, days)
    fixed()  # the first run parses the dbt project for this data dir: not part of any figure
    fixed_runs: list[Timed] = []
    settings = _log(workdir / "pipeline-full", EVENTS, TENANTS)
    full = _pipeline(settings, AS_OF, days)
    full()  # likewise for this data dir; the runs measured then all rebuild an existing warehouse
    full_runs = _alternating(fixed, full, fixed_runs)
    raw_s, raw_cpu = _median_s(lambda: _raw_groupby(settings), max(REPEATS, 5))
    # One new day on top of the history, the way the daily run sees it: only that day re-processed.
    from orchestration.benchmark import write_log

    next_day = AS_OF + timedelta(days=1)
    write_log(settings, EVENTS // DAYS, TENANTS, next_day.date(), 1, seed=11)
    new_days = (next_day.date(), next_day.date())
    new_day = _pipeline(settings, next_day, new_days)
    incremental_runs = _alternating(_pipeline(one, next_day, new_days), new_day, fixed_runs)

    def median(runs: list[Timed], which: int) -> float:
        return statistics.median(r[which] for r in runs)

    def added(runs: list[Timed], fixed_before: list[Timed], which: int) -> float:
        """What a run costs above the one-event run just before it, the median over the pairs: the machine's
        speed drifts by seconds between the full and the new-day runs, which the pairs cancel."""
        return statistics.median(r[which] - f[which] for r, f in zip(runs, fixed_before, strict=True))

    full_fixed, incremental_fixed = fixed_runs[:REPEATS], fixed_runs[REPEATS:]

    def figures(which: int, name: str, raw: float) -> dict:
        """The same figures on another measure of each run: its work (1) or its processor time (2)."""
        full_added = added(full_runs, full_fixed, which)
        incremental_added = added(incremental_runs, incremental_fixed, which)
        return {
            f"pipeline.fixed_{name}_s": round(median(full_fixed, which), 2),
            f"pipeline.full_{name}_s": round(median(full_runs, which), 2),
            f"pipeline.incremental_{name}_s": round(median(incremental_runs, which), 2),
            f"pipeline.full_added_{name}_s": round(full_added, 2),
            f"pipeline.incremental_added_{name}_s": round(incremental_added, 2),
            f"pipeline.full_vs_raw_ratio_by_{name}": _ratio(full_added, raw),
            f"pipeline.incremental_vs_full_ratio_by_{name}": _ratio(incremental_added, full_added),
            f"pipeline.fixed_runs_{name}_s": [round(r[which], 2) for r in fixed_runs],
            f"pipeline.full_runs_{name}_s": [round(r[which], 2) for r in full_runs],
            f"pipeline.incremental_runs_{name}_s": [round(r[which], 2) for r in incremental_runs],
        }

    fixed_s, full_s, incremental_s = (median(runs, 0) for runs in (full_fixed, full_runs, incremental_runs))
    full_added_s, incremental_added_s = added(full_runs, full_fixed, 0), added(incremental_runs, incremental_fixed, 0)
    return {
        "pipeline.events": EVENTS,
        "pipeline.tenants": TENANTS,
        "pipeline.repeats": REPEATS,
        "pipeline.full_build_s": round(full_s, 1),
        "pipeline.fixed_s": round(fixed_s, 1),
        "pipeline.raw_groupby_s": round(raw_s, 2),
        "pipeline.incremental_s": round(incremental_s, 1),
        "pipeline.incremental_fixed_s": round(median(incremental_fixed, 0), 1),  # the new day's one-event build
        # The formulas, on paired runs: full_build_s - fixed_s and incremental_s - fixed_s as the median
        # over the pairs (each run less the one-event run just before it), reported as *_added_s.
        "pipeline.full_added_s": round(full_added_s, 2),
        "pipeline.incremental_added_s": round(incremental_added_s, 2),
        "pipeline.full_vs_raw_ratio": _ratio(full_added_s, raw_s),
        "pipeline.incremental_vs_full_ratio": _ratio(incremental_added_s, full_added_s),
        # Every run, in order: the one-event runs vary by seconds from run to run (dbt and Dagster start-up),
        # as much as a new day's work costs; a negative ratio means the new day was lost in that noise.
        "pipeline.fixed_runs_s": [round(r[0], 1) for r in fixed_runs],
        "pipeline.full_runs_s": [round(r[0], 1) for r in full_runs],
        "pipeline.incremental_runs_s": [round(r[0], 1) for r in incremental_runs],
        # The same, on the work inside each run (dbt node times + Python asset steps) and on its processor time
        # (see the module's doc).
        **figures(1, "work", raw_s),
        "pipeline.raw_groupby_cpu_s": round(raw_cpu, 2),
        **figures(2, "cpu", raw_cpu),
    }
