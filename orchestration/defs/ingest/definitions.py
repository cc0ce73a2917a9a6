import dagster as dg

from orchestration.defs.ingest.assets import event_log, metadata_export

defs = dg.Definitions(assets=[metadata_export, event_log])
