"""dbt models as assets: the daily models (tag `daily`: the only ones reading the log, re-processing the days of
their partition window) in one partitioned asset set, everything else in another."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from chatmeter.settings import Settings
from orchestration.defs.dbt.partitions import build_args, daily_partitions, dbt_vars
from orchestration.defs.dbt.translator import ChatmeterTranslator
from orchestration.project import dbt_project
from orchestration.resources import ChatmeterResource, dbt_env, pipeline_dir

# The daily models, and the tests of the window's days of the log (tag daily too).
DAILY_SELECT = "tag:daily"
PARTIAL_PARSE = "partial_parse.msgpack"


@contextlib.contextmanager
def scratch_target(settings: Settings) -> Iterator[Path]:
    """A target dir per invocation, removed after it: the snapshot job runs every few minutes and would
    otherwise leave a copy of dbt's artifacts in dbt_project/target each time. dbt's parse state is kept per
    data dir: the project's own was parsed with another warehouse path, and dbt re-parses the whole project when
    the profile differs (seconds per invocation); it still re-parses any file that changed."""
    state = pipeline_dir(settings) / PARTIAL_PARSE
    with tempfile.TemporaryDirectory(prefix="chatmeter-dbt-") as target:
        if state.exists():
            shutil.copyfile(state, Path(target) / PARTIAL_PARSE)
        yield Path(target)
        if (Path(target) / PARTIAL_PARSE).exists():
            state.parent.mkdir(parents=True, exist_ok=True)
            kept = state.with_name(f".{PARTIAL_PARSE}.{os.getpid()}.tmp")
            shutil.copyfile(Path(target) / PARTIAL_PARSE, kept)
            os.replace(kept, state)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    select=DAILY_SELECT,
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
    context.log.info("dbt run for %s", variables)
    settings = chatmeter.settings()
    with dbt_env(settings, variables), scratch_target(settings) as target:
        yield from dbt.cli(build_args("build"), context=context, target_path=target).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    exclude=DAILY_SELECT,
    dagster_dbt_translator=ChatmeterTranslator(),
    name="warehouse_dbt_assets",
    pool="warehouse",
)
def warehouse_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource, chatmeter: ChatmeterResource):
    variables = dbt_vars(chatmeter.as_of)
    settings = chatmeter.settings()
    with dbt_env(settings, variables), scratch_target(settings) as target:
        yield from dbt.cli(build_args("build"), context=context, target_path=target).stream()
