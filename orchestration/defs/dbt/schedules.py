from datetime import timedelta

import dagster as dg

from orchestration.defs.dbt.assets import daily_usage_dbt_assets, warehouse_dbt_assets
from orchestration.defs.dbt.partitions import daily_partitions
from orchestration.defs.ingest.assets import metadata_export

daily_usage_job = dg.define_asset_job(
    "daily_usage_job",
    selection=dg.AssetSelection.assets(daily_usage_dbt_assets),
    partitions_def=daily_partitions,
)

warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=dg.AssetSelection.assets(metadata_export)
    | dg.AssetSelection.assets(warehouse_dbt_assets)
    | dg.AssetSelection.groups("forecast", "retention"),
)


@dg.schedule(
    job=daily_usage_job,
    cron_schedule="15 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_usage_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """After midnight UTC: re-process the day that just ended (its late events included)."""
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"daily_usage_{day}", partition_key=day)


warehouse_schedule = dg.ScheduleDefinition(
    name="warehouse_schedule",
    job=warehouse_job,
    cron_schedule="45 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
