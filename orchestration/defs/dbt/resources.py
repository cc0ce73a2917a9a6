"""dbt as dagster-dbt runs it (a subprocess per invocation), less what the pipeline never uses: about 4 s of a
run's fixed cost, measured on a one-event log."""

import importlib.metadata
from functools import cached_property

from dagster_dbt import DbtCliResource
from packaging.version import Version

from orchestration.project import DBT_EXECUTABLE, dbt_project


class ChatmeterDbtResource(DbtCliResource):
    """dagster-dbt asks `dbt --version` in a subprocess (2 s here) to tell dbt Core from Fusion, and before each
    invocation builds a dbt Core adapter in-process (loading every macro) for column and row-count metadata,
    which these assets never fetch. The executable is this environment's dbt Core (DBT_EXECUTABLE), so its
    version is the installed package's; without an adapter, dbt's events still stream to Dagster as before."""

    @cached_property
    def _cli_version(self) -> Version:
        return Version(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        return None


def dbt_resource() -> DbtCliResource:
    # dagster-dbt points dbt's log file at the invocation's target dir, which is removed after it (scratch_target):
    # writing dbt's debug log there only cost about a second per run. Dagster keeps dbt's events.
    return ChatmeterDbtResource(
        project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE, global_config_flags=["--log-level-file", "none"]
    )
