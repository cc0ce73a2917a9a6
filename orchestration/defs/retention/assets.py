"""Transcript retention: delete transcript days older than the retention period, once their usage is in the
daily marts. Usage events are kept."""

import shutil
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from orchestration.resources import ChatmeterResource, event_files_of_days
from orchestration.warehouse import connect


def expired_days(transcripts_dir: Path, today: date, retention_days: int) -> list[tuple[date, Path]]:
    cutoff = today - timedelta(days=retention_days)
    out = []
    for folder in sorted(transcripts_dir.glob("event_date=*")):
        try:
            day = date.fromisoformat(folder.name.split("=", 1)[1])
        except ValueError:
            continue
        if day < cutoff:
            out.append((day, folder))
    return out


@dg.asset(
    group_name="retention",
    deps=["fct_daily_usage"],
    description="Transcripts older than settings.transcript_retention_days deleted, day by day, only once "
    "that day's events are all counted in fct_daily_usage; usage events are kept.",
    pool="warehouse",
)
def transcript_retention(chatmeter: ChatmeterResource) -> dg.MaterializeResult:
    settings = chatmeter.settings()
    candidates = expired_days(settings.transcripts_dir, chatmeter.now().date(), settings.transcript_retention_days)
    deleted, kept = [], []
    if candidates:
        with connect(settings) as con:
            days = [d for d, _ in candidates]
            first, last = min(days), max(days)
            logged = dict(
                con.execute(
                    "select cast(cast(occurred_at as timestamptz) as date) as d, count(distinct event_id) "
                    "from read_parquet(?, union_by_name = true, hive_partitioning = false) "
                    "where cast(cast(occurred_at as timestamptz) as date) between ? and ? group by 1",
                    # The days' folders, and a day's on each side: the day here is occurred_at's, not the folder's.
                    [event_files_of_days(settings, first - timedelta(1), last + timedelta(1)), first, last],
                ).fetchall()
            )
            counted = dict(
                con.execute(
                    "select usage_date, sum(events)::bigint from fct_daily_usage where usage_date between ? and ? "
                    "group by 1",
                    [first, last],
                ).fetchall()
            )
        for day, folder in candidates:
            if logged.get(day, 0) == counted.get(day, 0):
                shutil.rmtree(folder)
                deleted.append(day.isoformat())
            else:
                kept.append(day.isoformat())
    return dg.MaterializeResult(
        metadata={
            "deleted_days": dg.MetadataValue.json(deleted),
            "kept_not_aggregated": dg.MetadataValue.json(kept),
            "retention_days": settings.transcript_retention_days,
        }
    )
