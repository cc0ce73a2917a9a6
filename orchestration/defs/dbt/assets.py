"""dbt models as assets: the incremental daily model partitioned by day, everything else in one asset set."""

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.defs.dbt.partitions import build_args, daily_partitions, dbt_vars
from orchestration.defs.dbt.translator import ChatmeterTranslator
from orchestration.project import dbt_project
from orchestration.resources import ChatmeterResource, dbt_env

INCREMENTAL_SELECT = "fct_daily_usage"


@contextlib.contextmanager
def scratch_target() -> Iterator[Path]:
    """A target dir per invocation, removed after it: the snapshot job runs every few minutes and would
    otherwise leave a copy of dbt's artifacts in dbt_project/target each time."""
    with tempfile.TemporaryDirectory(prefix="chatmeter-dbt-") as target:
        yield Path(target)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    select=INCREMENTAL_SELECT,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=ChatmeterTranslator(),
    name="daily_usage_dbt_assets",
    pool="warehouse",
)
def daily_usage_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource, chatmeter: ChatmeterResource):
    """Re-processes the partition window's days (late events land in their day)."""
    window = context.partition_time_window
    variables = dbt_vars(chatmeter.as_of, (window.start, window.end))
    context.log.info("dbt vars %s", variables)
    with dbt_env(chatmeter.settings()), scratch_target() as target:
        yield from dbt.cli(build_args("build", variables), context=context, target_path=target).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    exclude=INCREMENTAL_SELECT,
    dagster_dbt_translator=ChatmeterTranslator(),
    name="warehouse_dbt_assets",
    pool="warehouse",
)
def warehouse_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource, chatmeter: ChatmeterResource):
    variables = dbt_vars(chatmeter.as_of)
    with dbt_env(chatmeter.settings()), scratch_target() as target:
        yield from dbt.cli(build_args("build", variables), context=context, target_path=target).stream()
