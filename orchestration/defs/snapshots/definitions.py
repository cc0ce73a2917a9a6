from datetime import datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from orchestration.defs.dbt.partitions import daily_partitions
from orchestration.defs.ingest.assets import EVENT_LOG
from orchestration.defs.snapshots.assets import limit_snapshot_file

# Everything the published snapshot is built from: the metadata, the daily models (for the days of the run),
# the snapshot models; then the alerts.
snapshot_job = dg.define_asset_job(
    "snapshot_job",
    selection=(
        dg.AssetSelection.assets("limit_snapshot_file").upstream().required_multi_asset_neighbors()
        - dg.AssetSelection.assets(EVENT_LOG)
    )
    | dg.AssetSelection.groups("alerts"),
    partitions_def=daily_partitions,
)


def snapshot_run_tags(now: datetime) -> dict[str, str]:
    """The days a snapshot run re-reads: today, and yesterday (a segment rolled just after midnight lands in
    it). Older days come from earlier runs; events the daily models have not read yet lie above the watermark,
    which the API counts live."""
    today = now.date()
    return {
        ASSET_PARTITION_RANGE_START_TAG: (today - timedelta(days=1)).isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: today.isoformat(),
    }


@dg.schedule(
    job=snapshot_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def snapshot_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(tags=snapshot_run_tags(context.scheduled_execution_time))


defs = dg.Definitions(assets=[limit_snapshot_file], jobs=[snapshot_job], schedules=[snapshot_schedule])
