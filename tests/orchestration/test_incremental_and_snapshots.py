"""dbt runs on private data dirs: late events re-processed by day, the watermark's dense-prefix rule, and the log's
one check of each day's events."""

import subprocess
from datetime import UTC, date, datetime

import dagster as dg
import duckdb

from chatmeter.store import Store
from orchestration.defs.dbt.assets import daily_usage_dbt_assets, warehouse_dbt_assets
from orchestration.defs.ingest.assets import metadata_export
from orchestration.defs.snapshots.assets import limit_snapshot_file
from orchestration.defs.snapshots.definitions import snapshot_run_tags
from orchestration.defs.snapshots.publish import read_current
from orchestration.run import run_pipeline
from tests.orchestration.factories import AS_OF, EventLog, event
from tests.orchestration.helpers import asset_metadata, dbt, resources


def daily_tokens(settings, day: str) -> int:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(
            "select coalesce(sum(tokens), 0)::bigint from fct_daily_usage where usage_date = ?", [day]
        ).fetchall()[0][0]
    finally:
        con.close()


def test_late_events_land_in_their_day(built_copy):
    settings, info = built_copy
    before_day, before_other = daily_tokens(settings, "2026-11-01"), daily_tokens(settings, "2026-11-02")
    log = EventLog(settings.events_dir, next_seq=dict(info["log"].next_seq))
    log.write(
        [
            event(
                info["payg"],
                datetime(2026, 11, 1, 23, 59, 59, 999999, tzinfo=UTC),
                input_tokens=7,
                output_tokens=3,
                writer_id="w1",
            )
        ]
    )
    result = dg.materialize([daily_usage_dbt_assets], partition_key="2026-11-01", resources=resources(settings))
    assert result.success
    assert daily_tokens(settings, "2026-11-01") == before_day + 10
    assert daily_tokens(settings, "2026-11-02") == before_other


def test_one_day_run_reprocesses_only_that_day(built_copy):
    """The daily run: the whole pipeline, every asset, reading only its day of the log."""
    settings, info = built_copy
    log = EventLog(settings.events_dir, next_seq=dict(info["log"].next_seq))
    watermark_before = read_current(settings.snapshots_dir)[0]["watermark"]
    late, today = daily_tokens(settings, "2026-11-19"), daily_tokens(settings, "2026-11-20")
    log.write(
        [
            event(
                info["payg"], datetime(2026, 11, 19, 10, tzinfo=UTC), input_tokens=7, output_tokens=3, writer_id="w1"
            ),
            event(
                info["payg"], datetime(2026, 11, 20, 11, tzinfo=UTC), input_tokens=70, output_tokens=30, writer_id="w2"
            ),
        ]
    )
    assert run_pipeline(settings, as_of=AS_OF, days=(date(2026, 11, 20), date(2026, 11, 20)))
    assert daily_tokens(settings, "2026-11-20") == today + 100
    assert daily_tokens(settings, "2026-11-19") == late  # not re-read: its late event waits for a run covering it
    manifest, rows = snapshot_rows(settings, info["payg"])
    # w1's event was not read: it lies above the watermark (the API counts it live); w2's was.
    assert manifest["watermark"] == {"w1": watermark_before["w1"], "w2": watermark_before["w2"] + 1}
    assert rows[("tenant", "tokens", "day")]["used"] == daily_tokens_of(settings, info["payg"], "2026-11-20")


def daily_tokens_of(settings, tenant_id: str, day: str) -> int:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(
            "select sum(tokens)::bigint from fct_daily_usage where usage_date = ? and tenant_id = ?", [day, tenant_id]
        ).fetchall()[0][0]
    finally:
        con.close()


def snapshot_rows(settings, tenant_id):
    manifest, table = read_current(settings.snapshots_dir)
    rows = {
        (r["scope"], r["meter"], r["window"]): r
        for r in table.to_pylist()
        if r["tenant_id"] == tenant_id and r["scope"] == "tenant"
    }
    return manifest, rows


def test_watermark_is_the_dense_prefix(settings):
    store = Store(settings.metadata_url)
    tenant, _, _ = store.create_tenant("Gap Co", "free", at=datetime(2026, 11, 2, tzinfo=UTC))
    store.engine.dispose()
    log = EventLog(settings.events_dir)
    at = datetime(2026, 11, 20, 8, tzinfo=UTC)
    events = log.number(
        [event(tenant.tenant_id, at, input_tokens=100, output_tokens=0, writer_id="api-1") for _ in range(5)]
    )
    # seq 4 has not been rolled into Parquet yet: files hold 1-3 and 5.
    log.write(events[:3], numbered=True)
    log.write(events[4:], numbered=True)
    # What the snapshot job runs: metadata, the daily models for yesterday and today, the snapshot models.
    snapshot_assets = [metadata_export, daily_usage_dbt_assets, warehouse_dbt_assets, limit_snapshot_file]
    selection = dg.AssetSelection.assets(
        limit_snapshot_file
    ).upstream().required_multi_asset_neighbors() - dg.AssetSelection.assets(["log", "events"])
    result = dg.materialize(
        snapshot_assets, resources=resources(settings), selection=selection, tags=snapshot_run_tags(AS_OF)
    )
    assert result.success
    manifest, rows = snapshot_rows(settings, tenant.tenant_id)
    assert manifest["watermark"] == {"api-1": 3}
    assert asset_metadata(result, "limit_snapshot_file")["watermark"] == {"api-1": 3}
    assert rows[("tenant", "tokens", "month")]["used"] == 300
    assert rows[("tenant", "tokens", "month")]["limit"] == 10000
    assert rows[("tenant", "tokens", "month")]["remaining"] == 9700
    first_file = manifest["file"]

    log.write(events[3:4], numbered=True)
    later = AS_OF.replace(minute=5)
    result = dg.materialize(
        snapshot_assets, resources=resources(settings, later), selection=selection, tags=snapshot_run_tags(later)
    )
    assert result.success
    manifest, rows = snapshot_rows(settings, tenant.tenant_id)
    assert manifest["watermark"] == {"api-1": 5}
    assert rows[("tenant", "tokens", "month")]["used"] == 500
    assert manifest["file"] != first_file
    assert (settings.snapshots_dir / first_file).exists()  # the previous file stays for readers mid-swap


def test_a_file_with_a_gap_or_a_repeated_seq_is_split_into_ranges(settings):
    """A file not in seq order without gaps (a hand-made or recovered one) is read row by row: its ranges are
    the runs of consecutive seqs, a repeated seq counts twice in `events`, and the watermark stops at its gap."""
    log = EventLog(settings.events_dir)
    at = datetime(2026, 11, 20, 8, tzinfo=UTC)
    events = log.number([event("t1", at, input_tokens=10, writer_id="api-1") for _ in range(6)])
    repeated = dict(events[1], event_id="copy-of-2")  # seq 2 twice
    log.write([*events[:3], repeated, *events[4:]], numbered=True)  # one file: seqs 1, 2, 2, 3, 5, 6
    built = dbt(settings, "run", "--select", "+snapshot_watermarks", variables={"as_of": AS_OF.isoformat()})
    assert built.returncode == 0, built.stdout[-3000:]
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        ranges = con.execute("select seq_from, seq_to, events from int_log_seq_ranges order by seq_from").fetchall()
        watermark = con.execute("select writer_id, watermark from snapshot_watermarks").fetchall()
    finally:
        con.close()
    assert ranges == [(1, 3, 4), (5, 6, 2)]
    assert watermark == [("api-1", 3)]


def daily_build(settings, day: date) -> subprocess.CompletedProcess:
    """The daily models and the log's test for one day, as the daily run builds them."""
    variables = {"as_of": AS_OF.isoformat(), "min_date": day.isoformat(), "max_date": day.isoformat()}
    return dbt(settings, "build", "--select", "tag:daily", variables=variables)


def test_log_check_fails_on_a_malformed_or_twice_counted_event(settings):
    """log_events_valid on the run's day finds an event filed under the wrong day, an unknown kind, and an event
    logged twice under two seqs (a copy deduplication cannot see: it is counted twice)."""
    log = EventLog(settings.events_dir)
    day = date(2026, 11, 20)
    at = datetime(2026, 11, 20, 9, tzinfo=UTC)
    log.write([event("t1", at, input_tokens=10, writer_id="w1") for _ in range(3)])
    passed = daily_build(settings, day)
    assert passed.returncode == 0, passed.stdout[-3000:]
    assert "PASS log_events_valid" in passed.stdout

    misfiled = event("t1", datetime(2026, 11, 21, 0, 30, tzinfo=UTC), input_tokens=5, writer_id="w2")
    misfiled["event_date"] = day
    log.write([misfiled])
    failed = daily_build(settings, day)
    assert failed.returncode != 0
    assert "FAIL 1 log_events_valid" in failed.stdout, failed.stdout[-3000:]
    for path in settings.events_dir.glob("*/w2-*.parquet"):
        path.unlink()

    unknown = event("t1", at, kind="image", writer_id="w3")
    paths = log.write([unknown])
    failed = daily_build(settings, day)
    assert "FAIL 1 log_events_valid" in failed.stdout, failed.stdout[-3000:]
    paths[0].unlink()

    again = event("t1", at, input_tokens=10, writer_id="w1")
    log.write([again])
    log.write([dict(again)])  # the same event appended again: a new seq, a new file
    failed = daily_build(settings, day)
    assert "FAIL 1 log_events_valid" in failed.stdout, failed.stdout[-3000:]


def test_log_check_reads_every_day_of_a_full_build(settings):
    """A full build checks every day it re-processes, not only the current ones (where ids are also counted): an
    event filed under the wrong day, a little after or before it, is found on a day long past."""
    log = EventLog(settings.events_dir)
    old = date(2026, 11, 10)
    log.write([event("t1", datetime(2026, 11, 10, 9, tzinfo=UTC), input_tokens=10, writer_id="w1") for _ in range(3)])
    log.write([event("t1", datetime(2026, 11, 20, 9, tzinfo=UTC), input_tokens=10, writer_id="w1")])
    variables = {"as_of": AS_OF.isoformat()}
    passed = dbt(settings, "build", "--select", "tag:daily", variables=variables)
    assert "PASS log_events_valid" in passed.stdout, passed.stdout[-3000:]

    misfiled = event("t1", datetime(2026, 11, 11, 0, 0, tzinfo=UTC), input_tokens=5, writer_id="w2")
    misfiled["event_date"] = old
    paths = log.write([misfiled])
    failed = dbt(settings, "build", "--select", "tag:daily", variables=variables)
    assert "FAIL 1 log_events_valid" in failed.stdout, failed.stdout[-3000:]
    paths[0].unlink()

    early = event("t1", datetime(2026, 11, 9, 23, 59, 59, 999999, tzinfo=UTC), input_tokens=5, writer_id="w3")
    early["event_date"] = old
    paths = log.write([early])
    failed = dbt(settings, "build", "--select", "tag:daily", variables=variables)
    assert "FAIL 1 log_events_valid" in failed.stdout, failed.stdout[-3000:]
    paths[0].unlink()
    assert "PASS log_events_valid" in dbt(settings, "build", "--select", "tag:daily", variables=variables).stdout
