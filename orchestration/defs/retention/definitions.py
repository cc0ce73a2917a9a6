import dagster as dg

from orchestration.defs.retention.assets import transcript_retention

defs = dg.Definitions(assets=[transcript_retention])
