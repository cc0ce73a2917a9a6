"""Resources shared by every subject: where the data dir is, what time it is, and the dbt environment."""

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from chatmeter.schemas import EVENT_SCHEMA
from chatmeter.settings import Settings, get_settings

EVENT_GLOB = "events/*/*.parquet"


class ChatmeterResource(dg.ConfigurableResource):
    """The data dir the pipeline works on, and the instant it treats as now.

    `as_of` pins the clock (tests, backfills); unset, the wall clock is used.
    """

    data_dir: str | None = None
    database_url: str | None = None
    catalog_path: str | None = None
    transcript_retention_days: int | None = None
    grace_days: int | None = None
    as_of: str | None = None

    def settings(self) -> Settings:
        """The environment's settings, with what this resource was configured with on top."""
        overrides = {
            k: v
            for k, v in {
                "data_dir": self.data_dir and Path(self.data_dir),
                "database_url": self.database_url,
                "catalog_path": self.catalog_path and Path(self.catalog_path),
                "transcript_retention_days": self.transcript_retention_days,
                "grace_days": self.grace_days,
            }.items()
            if v is not None
        }
        return Settings(**overrides) if overrides else get_settings()

    def now(self) -> datetime:
        if self.as_of:
            return datetime.fromisoformat(self.as_of).astimezone(UTC)
        return datetime.now(UTC)


def pipeline_dir(settings: Settings) -> Path:
    """The pipeline's own files in the data dir: metadata exports, alert records, placeholders."""
    return settings.data_dir / "pipeline"


def metadata_dir(settings: Settings) -> Path:
    return pipeline_dir(settings) / "metadata"


def empty_event_file(settings: Settings) -> Path:
    """An empty file of the event schema: read where no log file is (DuckDB refuses a glob that matches nothing,
    and a glob of the whole log opens every file of it)."""
    placeholder = pipeline_dir(settings) / "empty_events.parquet"
    if not placeholder.exists() or not pq.read_schema(placeholder).equals(EVENT_SCHEMA):
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        written = placeholder.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(EVENT_SCHEMA.empty_table(), written)
        written.replace(placeholder)
    return placeholder.resolve()


def event_files_of_days(settings: Settings, first: date, last: date | None = None) -> list[str]:
    """The log's files in the day folders first..last (no last: every later day), for a check of those days that
    opens them only, not every file of the log; the empty file when there is none."""
    files = []
    for folder in settings.events_dir.glob("event_date=*"):
        try:
            day = date.fromisoformat(folder.name.split("=", 1)[1])
        except ValueError:
            continue
        if first <= day and (last is None or day <= last):
            files.extend(str(path.resolve()) for path in folder.glob("*.parquet"))
    return sorted(files) or [str(empty_event_file(settings))]


def event_files(settings: Settings) -> str:
    """The Parquet glob dbt reads the log from; the empty file while the log holds none."""
    if any(settings.events_dir.glob("*/*.parquet")):
        return str(settings.data_dir.resolve() / EVENT_GLOB)
    return str(empty_event_file(settings))


def dbt_environment(settings: Settings, variables: dict[str, str] | None = None) -> dict[str, str]:
    """Paths, and what the run is for (`as_of`, `min_date`, `max_date`: see the dbt macro run_var)."""
    from orchestration.defs.dbt.partitions import run_environment

    return {
        "CHATMETER_DATA_DIR": str(settings.data_dir.resolve()),
        "CHATMETER_WAREHOUSE": str(settings.warehouse_path.resolve()),
        "CHATMETER_EVENT_FILES": event_files(settings),
        "CHATMETER_EMPTY_EVENTS": str(empty_event_file(settings)),
        **run_environment(variables or {}),
    }


@contextlib.contextmanager
def dbt_env(settings: Settings, variables: dict[str, str] | None = None) -> Iterator[None]:
    """dbt (a subprocess of dagster-dbt) reads its paths from the environment: set them for one invocation."""
    values = dbt_environment(settings, variables)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def pipeline_resources(
    settings: Settings | None = None,
    as_of: str | None = None,
    stripe_key: str | None = None,
    stripe_api_base: str | None = None,
) -> dict:
    """The one place resources are chosen. The Stripe key comes in as EnvVar (resolved when a run needs it)
    unless given here; `stripe_api_base` points the SDK at another server (a test double)."""
    from orchestration.defs.dbt.resources import dbt_resource
    from orchestration.defs.stripe_sync.resources import StripeResource

    return {
        "chatmeter": chatmeter_resource(settings, as_of),
        "dbt": dbt_resource(),
        "stripe": StripeResource(api_key=stripe_key or dg.EnvVar("STRIPE_API_KEY"), api_base=stripe_api_base),
    }


def chatmeter_resource(settings: Settings | None = None, as_of: str | None = None) -> ChatmeterResource:
    if settings is None:
        return ChatmeterResource(as_of=as_of)
    return ChatmeterResource(
        data_dir=str(settings.data_dir),
        database_url=settings.database_url,
        catalog_path=str(settings.catalog_path) if settings.catalog_path else None,
        transcript_retention_days=settings.transcript_retention_days,
        grace_days=settings.grace_days,
        as_of=as_of,
    )
