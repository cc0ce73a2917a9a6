import dagster as dg

from orchestration.defs.forecast.assets import usage_forecasts

defs = dg.Definitions(assets=[usage_forecasts])
