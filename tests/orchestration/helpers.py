from datetime import datetime

import dagster as dg

from chatmeter.settings import Settings
from orchestration.resources import pipeline_resources
from tests.orchestration.factories import AS_OF


def resources(settings: Settings, as_of: datetime = AS_OF, **extra) -> dict:
    out = pipeline_resources(settings, as_of.isoformat(), stripe_key="sk_test_unused")
    out.update(extra)
    return out


def materialize(assets: list, settings: Settings, as_of: datetime = AS_OF, run_config=None, **kwargs):
    return dg.materialize(assets, resources=resources(settings, as_of), run_config=run_config, **kwargs)


def asset_metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    events = result.asset_materializations_for_node(key)
    assert events, f"no materialization for {key}"
    return {k: v.value for k, v in events[-1].metadata.items()}
