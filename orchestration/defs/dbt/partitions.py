"""Daily partitions of the incremental models, and the partition window -> dbt vars mapping."""

import json
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


def build_args(command: str, variables: dict[str, str]) -> list[str]:
    # cautious: a subset build (the snapshot job) runs only tests whose every parent is selected.
    args = [command, "--indirect-selection", "cautious"]
    if variables:
        args += ["--vars", json.dumps(variables, sort_keys=True)]
    return args
