import json

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from chatmeter.schemas import EVENT_SCHEMA, SNAPSHOT_SCHEMA
from chatmeter.settings import Settings
from orchestration.defs.dbt.checks import (
    invoice_totals_equal_lines,
    log_events_equal_daily_usage,
    snapshot_usage_equals_daily,
)
from orchestration.defs.snapshots.publish import read_current
from orchestration.resources import chatmeter_resource, empty_event_file
from tests.orchestration.factories import AS_OF
from tests.orchestration.helpers import dbt


def test_pipeline_builds_every_mart(built):
    settings, _ = built
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        for name in [
            "fct_daily_usage",
            "fct_tenant_costs_daily",
            "fct_tenant_costs_monthly",
            "invoices",
            "invoice_lines",
            "limit_snapshot",
            "snapshot_watermarks",
            "dim_plans",
            "dim_plan_limits",
            "dim_plan_overage",
            "dim_plan_assignments",
            "dim_catalog_versions",
            "usage_forecasts",
        ]:
            assert name in tables, name
        # Deduplicated: the duplicated file adds nothing.
        raw = con.execute(
            f"select count(*), count(distinct event_id) from read_parquet('{settings.events_dir}/*/*.parquet')"
        ).fetchall()[0]
        assert raw[0] > raw[1]
        assert con.execute("select sum(events) from fct_daily_usage").fetchall()[0][0] == raw[1]
        margin = con.execute("select count(*) from fct_tenant_costs_monthly where billed_amount > 0").fetchall()[0][0]
        assert margin > 0
    finally:
        con.close()


def test_dbt_unit_tests_pass(built):
    """The native unit tests (money, limits, windows, watermark) against the built warehouse."""
    settings, _ = built
    out = dbt(settings, "test", "--select", "test_type:unit")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "PASS=8" in out.stdout and "ERROR=0" in out.stdout


def test_snapshot_published_with_manifest(built):
    settings, info = built
    manifest, table = read_current(settings.snapshots_dir)
    assert table.schema.equals(SNAPSHOT_SCHEMA)
    assert manifest["rows"] == table.num_rows > 0
    assert manifest["file"] == f"limits_{manifest['snapshot_id']}.parquet"
    assert manifest["created_at"].endswith("Z")
    # Dense logs: the watermark is every writer's last seq.
    assert manifest["watermark"] == {w: n - 1 for w, n in info["log"].next_seq.items()}
    rows = table.to_pylist()
    team_limits = {
        (r["meter"], r["window"])
        for r in rows
        if r["tenant_id"] == info["team"] and r["scope"] == "tenant" and r["limit"] is not None
    }
    assert team_limits == {("tokens", "day"), ("requests", "day"), ("embedding_tokens", "day")}
    day = [
        r
        for r in rows
        if r["tenant_id"] == info["team"] and r["scope"] == "tenant" and r["meter"] == "tokens" and r["window"] == "day"
    ][0]
    assert day["window_start"].date() == AS_OF.date()
    assert day["remaining"] == max(day["limit"] - day["used"], 0)
    month = [
        r
        for r in rows
        if r["tenant_id"] == info["team"]
        and r["scope"] == "tenant"
        and r["meter"] == "tokens"
        and r["window"] == "month"
    ][0]
    assert month["window_start"].isoformat() == "2026-11-15T00:00:00+00:00"
    expected = sum(
        e["input_tokens"] + e["output_tokens"]
        for e in info["events"]
        if e["tenant_id"] == info["team"]
        and e["kind"] == "chat"
        and e["status"] != "rejected"
        and month["window_start"] <= e["occurred_at"] < month["window_end"]
    )
    assert month["used"] == expected
    assert {r["scope"] for r in rows} == {"tenant", "end_user", "key"}
    assert not list(settings.snapshots_dir.glob(".*tmp"))
    assert pq.read_table(settings.snapshots_dir / manifest["file"]).num_rows == manifest["rows"]


def test_reconciliation_checks_pass(built):
    settings, _ = built
    chatmeter = chatmeter_resource(settings, AS_OF.isoformat())
    for check in (log_events_equal_daily_usage, invoice_totals_equal_lines, snapshot_usage_equals_daily):
        result = check(chatmeter=chatmeter)
        assert result.passed, (check, result.metadata)


def test_log_reconciliation_finds_a_lost_file_of_the_recent_days(built_copy):
    """The check re-reads yesterday's and today's log: a file lost from today's log is an error."""
    settings, _ = built_copy
    chatmeter = chatmeter_resource(settings, AS_OF.isoformat())
    assert log_events_equal_daily_usage(chatmeter=chatmeter).passed
    today = sorted((settings.events_dir / f"event_date={AS_OF.date().isoformat()}").glob("*.parquet"))
    assert today
    today[0].unlink()
    result = log_events_equal_daily_usage(chatmeter=chatmeter)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["days_differing"].value == [AS_OF.date().isoformat()]


def test_forecasts(built):
    settings, info = built
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        rows = con.sql("select * from usage_forecasts").to_arrow_table().to_pylist()
    finally:
        con.close()
    team = {r["meter"]: r for r in rows if r["tenant_id"] == info["team"]}
    tokens = team["tokens"]
    assert tokens["projected_low"] <= tokens["projected"] <= tokens["projected_high"]
    assert tokens["used"] <= tokens["projected_low"]
    # The team tenant burns ~75k tokens a day against 500k a month: it will exceed, and soon.
    assert tokens["will_exceed"] and tokens["days_until_limit"] < 10
    assert tokens["recommended_plan"] is not None
    assert json.dumps(rows, default=str)


def test_empty_event_file_follows_the_event_schema(tmp_path):
    """Where dbt reads no log file it reads an empty file of the event schema: rewritten when the schema moved on
    (a column added since it was written), so a model never binds to a column the file lacks."""
    settings = Settings(data_dir=tmp_path, _env_file=None)
    stale = pa.schema([field for field in EVENT_SCHEMA if field.name != "error_code"])
    path = empty_event_file(settings)
    pq.write_table(stale.empty_table(), path)
    assert empty_event_file(settings) == path
    assert pq.read_schema(path).equals(EVENT_SCHEMA)
    assert pq.read_table(path).num_rows == 0
