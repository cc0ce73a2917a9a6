import dagster as dg

from orchestration.defs.ingest.assets import EVENT_LOG
from orchestration.defs.snapshots.assets import limit_snapshot_file

snapshot_job = dg.define_asset_job(
    "snapshot_job",
    selection=(
        dg.AssetSelection.assets("limit_snapshot_file").upstream().required_multi_asset_neighbors()
        - dg.AssetSelection.assets(EVENT_LOG)
    )
    | dg.AssetSelection.groups("alerts"),
)

snapshot_schedule = dg.ScheduleDefinition(
    name="snapshot_schedule",
    job=snapshot_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(assets=[limit_snapshot_file], jobs=[snapshot_job], schedules=[snapshot_schedule])
