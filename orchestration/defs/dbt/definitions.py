import dagster as dg

from orchestration.defs.dbt.assets import daily_usage_dbt_assets, warehouse_dbt_assets
from orchestration.defs.dbt.checks import checks
from orchestration.defs.dbt.schedules import (
    daily_usage_job,
    daily_usage_schedule,
    warehouse_job,
    warehouse_schedule,
)

defs = dg.Definitions(
    assets=[daily_usage_dbt_assets, warehouse_dbt_assets],
    asset_checks=checks,
    jobs=[daily_usage_job, warehouse_job],
    schedules=[daily_usage_schedule, warehouse_schedule],
)
