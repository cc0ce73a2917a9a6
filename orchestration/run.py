"""`chatmeter pipeline run`: materialise every asset once, blocking, against any data dir."""

import logging
import os
import subprocess
from datetime import UTC, date, datetime

from chatmeter.settings import Settings, get_settings
from orchestration.project import DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_project

log = logging.getLogger(__name__)


def manifest_is_fresh() -> bool:
    """The manifest exists and no project file changed since it was written."""
    manifest = dbt_project.manifest_path
    if not manifest.exists():
        return False
    built = manifest.stat().st_mtime
    sources = [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    for folder in ("models", "macros", "tests"):
        sources += [p for p in (DBT_PROJECT_DIR / folder).rglob("*") if p.suffix in (".sql", ".yml", ".py")]
    return all(p.stat().st_mtime <= built for p in sources if p.exists())


def ensure_manifest(force: bool = False) -> None:
    """`dbt parse` when the manifest is missing or older than the project, so the dbt assets are defined from
    the project as it is (never at import time)."""
    if not force and manifest_is_fresh():
        return
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    subprocess.run(
        [
            DBT_EXECUTABLE,
            "parse",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--quiet",
        ],
        check=True,
        env=env,
        cwd=DBT_PROJECT_DIR,
    )


def first_event_date(settings: Settings) -> date | None:
    days = sorted(p.name.split("=", 1)[1] for p in settings.events_dir.glob("event_date=*") if p.is_dir())
    return date.fromisoformat(days[0]) if days else None


def log_days(settings: Settings, today: date) -> tuple[str, str]:
    """Every day of the log up to today, at least today (so the daily tables exist on an empty log), as partition
    keys."""
    from orchestration.defs.dbt.partitions import daily_partitions

    start = min(first_event_date(settings) or today, today)
    keys = daily_partitions.get_partition_keys()
    return max(start.isoformat(), keys[0]), min(today.isoformat(), keys[-1])


def run_pipeline(
    settings: Settings | None = None, as_of: datetime | None = None, days: tuple[date, date] | None = None
) -> bool:
    """Materialise every asset once, in one run: metadata export, the daily models over `days` (inclusive;
    default every day of the log), the other dbt models, then the Python assets (snapshot, invoices, forecasts,
    Stripe, alerts, retention)."""
    return materialize_pipeline(settings, as_of, days).success


def materialize_pipeline(
    settings: Settings | None = None, as_of: datetime | None = None, days: tuple[date, date] | None = None
):
    """run_pipeline's run, returning Dagster's result (its events: what each step and dbt node took)."""
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_manifest()

    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from orchestration.definitions import defs
    from orchestration.resources import pipeline_resources

    resources = pipeline_resources(settings, as_of.isoformat() if as_of else None)
    if not os.environ.get("STRIPE_API_KEY"):
        # No key, no sync: the asset records that it skipped.
        from orchestration.defs.stripe_sync.resources import StripeResource

        resources["stripe"] = StripeResource(api_key=None)
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and a.is_executable]
    if days is None:
        first, last = log_days(settings, (as_of or datetime.now(UTC)).date())
    else:
        first, last = days[0].isoformat(), days[1].isoformat()
    # One run (Dagster orders the assets by their dependencies); the daily models get the window as a
    # partition range, processed in one dbt invocation (single-run backfill policy).
    result = dg.materialize(
        assets,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
    )
    log.info("pipeline run %s", "succeeded" if result.success else "failed")
    return result
