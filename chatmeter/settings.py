"""One settings object for every process: CHATMETER_* environment variables and .env."""

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATMETER_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    admin_token: str = "change-me-admin-token"
    provider: str = Field(default="simulated", pattern="^(simulated|openai|anthropic)$")
    # SQLite under the data dir by default; any SQLAlchemy URL (postgresql+psycopg://...) works.
    database_url: str | None = None
    # An operator's catalog overriding the shipped one; reloaded on change and by the admin endpoint.
    catalog_path: Path | None = None
    writer_id: str = "api"
    request_timeout_s: float = 120.0
    max_body_bytes: int = 1_048_576
    max_tokens_cap: int = 1_000_000
    idempotency_ttl_h: float = 24.0
    # The event log: group commit with fsync, rolled into Parquet by size or age.
    wal_roll_bytes: int = 16 * 1024 * 1024
    wal_roll_age_s: float = 5.0
    # How often the API looks for a new limit snapshot and catalog file change.
    reload_interval_s: float = 0.25
    auth_cache_ttl_s: float = 5.0
    # How long the API keeps an idle client connection open. Longer than clients keep theirs (httpx and the
    # OpenAI SDK: 5 s; load balancers: often 60 s), so that the client closes first: a server closing at the
    # moment a client reuses the connection resets that request.
    keep_alive_s: int = 75
    grace_days: int = 14
    transcript_retention_days: int = 30
    simulated_latency_ms: float = 0.0
    # `make bench` only: adds POST /bench/unmetered, the chat route without metering, as the baseline.
    bench_routes: bool = False
    # Stripe's own variable names, no prefix.
    stripe_api_key: str | None = Field(default=None, validation_alias="STRIPE_API_KEY")
    stripe_webhook_secret: str | None = Field(default=None, validation_alias="STRIPE_WEBHOOK_SECRET")

    @cached_property
    def events_dir(self) -> Path:
        return self.data_dir / "events"

    @cached_property
    def transcripts_dir(self) -> Path:
        return self.data_dir / "transcripts"

    @cached_property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @cached_property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @cached_property
    def invoices_dir(self) -> Path:
        return self.data_dir / "invoices"

    @cached_property
    def catalog_dir(self) -> Path:
        return self.data_dir / "catalog"

    @cached_property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def metadata_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'metadata.db').resolve()}"


def get_settings() -> Settings:
    return Settings()
