import os
import subprocess
from datetime import datetime

import dagster as dg

from chatmeter.settings import Settings
from orchestration.project import DBT_EXECUTABLE, DBT_PROJECT_DIR
from orchestration.resources import dbt_environment, pipeline_resources
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


def dbt(settings: Settings, *args: str, variables: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A dbt command on the settings' data dir, as the pipeline's environment points it (outputs captured)."""
    env = {**os.environ, **dbt_environment(settings, variables), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    folder = str(DBT_PROJECT_DIR)
    return subprocess.run(
        [DBT_EXECUTABLE, *args, "--project-dir", folder, "--profiles-dir", folder]
        + ["--target-path", str(settings.data_dir.parent / "target"), "--log-level-file", "none"],
        capture_output=True,
        text=True,
        env=env,
        cwd=DBT_PROJECT_DIR,
    )
