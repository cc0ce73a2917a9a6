"""Daily partitions of the incremental models, and what a run is for -> the dbt environment."""

from datetime import date, datetime, timedelta

import dagster as dg

daily_partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=1)


def window_vars(start: datetime, end: datetime) -> dict[str, str]:
    """A partition time window [start, end) as the inclusive {min_date, max_date} the models read."""
    last: date = (end - timedelta(days=1)).date()
    return {"min_date": start.date().isoformat(), "max_date": last.isoformat()}


def dbt_vars(as_of: str | None = None, window: tuple[datetime, datetime] | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    if as_of:
        out["as_of"] = as_of
    if window is not None:
        out.update(window_vars(*window))
    return out


def run_environment(variables: dict[str, str]) -> dict[str, str]:
    """The run's vars as the environment the models read them from (macro run_var): passed as `--vars`, they
    would change dbt's parse state every run and force a full re-parse (seconds per invocation)."""
    return {f"CHATMETER_{name.upper()}": variables.get(name, "") for name in ("as_of", "min_date", "max_date")}


def build_args(command: str) -> list[str]:
    # cautious: a subset build (the snapshot job) runs only tests whose every parent is selected. Unit tests
    # run in the test suite (tests/orchestration), not in every production run.
    return [command, "--indirect-selection", "cautious", "--exclude-resource-type", "unit_test"]
