import dagster as dg

from orchestration.defs.alerts.assets import limit_alerts

defs = dg.Definitions(assets=[limit_alerts])
