from collections.abc import Mapping
from typing import Any

from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings


class ChatmeterTranslator(DagsterDbtTranslator):
    """dbt sources keep their [source, table] keys (the event log spec and the metadata export's assets);
    models are grouped by layer."""

    def __init__(self):
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        path = dbt_resource_props.get("fqn", [])
        return f"dbt_{path[1]}" if len(path) > 2 else "dbt"
