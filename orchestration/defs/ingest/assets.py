import dagster as dg

from orchestration.defs.ingest.metadata import SCHEMAS, export_metadata
from orchestration.resources import ChatmeterResource, metadata_dir

EVENT_LOG = dg.AssetKey(["log", "events"])

event_log = dg.AssetSpec(
    key=EVENT_LOG,
    group_name="ingest",
    description="The usage event log: Parquet files written by serving under <data_dir>/events/.",
)


@dg.multi_asset(
    name="metadata_export",
    group_name="ingest",
    specs=[dg.AssetSpec(["metadata", name], description=f"{name}, exported to Parquet for dbt") for name in SCHEMAS],
    pool="warehouse",
)
def metadata_export(chatmeter: ChatmeterResource):
    """The metadata store and every catalog version, exported to Parquet for the dbt sources."""
    settings = chatmeter.settings()
    counts = export_metadata(settings, metadata_dir(settings))
    for name, n in counts.items():
        yield dg.MaterializeResult(asset_key=["metadata", name], metadata={"rows": n})
