"""Limit snapshots: the running API picks a new one up without a restart, folds its live deltas in, and
ignores a corrupt one (the previous stays in force)."""

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from chatmeter.schemas import SNAPSHOT_SCHEMA
from chatmeter.windows import billing_month, day_window
from tests.conftest import chat_body, wait_for


def publish_table(
    snapshots_dir: Path,
    snapshot_id: str,
    table: pa.Table,
    watermark: dict[str, int] | None = None,
    file: str | None = None,
) -> None:
    """The format the API reads, written from the reader's side (not by the pipeline's code, so a change to
    either shows): the Parquet file, then a manifest that checks out (rows, checksum) swapped in atomically.
    `file` makes the manifest name another file."""
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    name = f"limits_{snapshot_id}.parquet"
    pq.write_table(table, snapshots_dir / name)
    manifest = {
        "snapshot_id": snapshot_id,
        "created_at": datetime.now(UTC).isoformat(),
        "watermark": watermark or {},
        "file": file or name,
        "rows": table.num_rows,
        "sha256": hashlib.sha256((snapshots_dir / name).read_bytes()).hexdigest(),
    }
    tmp = snapshots_dir / ".current.json.tmp"
    tmp.write_text(json.dumps(manifest))
    tmp.replace(snapshots_dir / "current.json")


def publish(snapshots_dir: Path, snapshot_id: str, watermark: dict[str, int], rows: list[dict]) -> None:
    publish_table(snapshots_dir, snapshot_id, pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA), watermark)


def month_row(tenant_id: str, anchor_day: int, used: int, meter: str = "tokens") -> dict:
    window = billing_month(datetime.now(UTC), anchor_day)
    return {
        "tenant_id": tenant_id,
        "scope": "tenant",
        "scope_id": tenant_id,
        "meter": meter,
        "window": "month",
        "window_start": window.start,
        "window_end": window.end,
        "used": Decimal(used),
        "limit": None,
        "remaining": None,
    }


def test_new_snapshot_is_enforced_without_restart(client, tenants, settings):
    t = tenants.create("free")
    rt = client.app.state.runtime
    r = client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"])
    live = r.json()["usage"]["total_tokens"]
    anchor = rt.store.get_tenant(t["tenant_id"]).anchor_day
    # The pipeline counted this call (watermark covers it) and 9,900 older tokens from backfilled history.
    seq = rt.log.next_seq - 1
    publish(settings.snapshots_dir, "s1", {settings.writer_id: seq}, [month_row(t["tenant_id"], anchor, 9900 + live)])
    assert wait_for(lambda: rt.admission.snapshot_id == "s1")
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] == 9900 + live  # the live delta was folded in, not counted twice
    r = client.post("/v1/chat/completions", json=chat_body("x " * 200, max_tokens=50), headers=t["headers"])
    assert r.status_code == 429


def test_events_after_the_watermark_stay_live(client, tenants, settings):
    t = tenants.create("free")
    rt = client.app.state.runtime
    first = client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"]).json()["usage"]["total_tokens"]
    seq_first = rt.log.next_seq - 1
    second = client.post("/v1/chat/completions", json=chat_body("again"), headers=t["headers"]).json()
    anchor = rt.store.get_tenant(t["tenant_id"]).anchor_day
    publish(settings.snapshots_dir, "s2", {settings.writer_id: seq_first}, [month_row(t["tenant_id"], anchor, first)])
    assert wait_for(lambda: rt.admission.snapshot_id == "s2")
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] == first + second["usage"]["total_tokens"]


def test_corrupt_snapshot_is_ignored_and_the_previous_stays(client, tenants, settings):
    t = tenants.create("free")
    rt = client.app.state.runtime
    anchor = rt.store.get_tenant(t["tenant_id"]).anchor_day
    publish(settings.snapshots_dir, "good", {}, [month_row(t["tenant_id"], anchor, 1234)])
    assert wait_for(lambda: rt.admission.snapshot_id == "good")
    errors = rt.snapshot_errors
    # A half-written file: the manifest names it, its bytes do not match.
    publish(settings.snapshots_dir, "bad", {}, [month_row(t["tenant_id"], anchor, 5)])
    path = settings.snapshots_dir / "limits_bad.parquet"
    path.write_bytes(path.read_bytes()[:100])
    assert wait_for(lambda: rt.snapshot_errors > errors)
    assert rt.admission.snapshot_id == "good"
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 1234
    (settings.snapshots_dir / "current.json").write_text("{not json")
    assert wait_for(lambda: rt.snapshot_errors > errors + 1)
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 1234


def test_snapshot_rows_of_day_windows_and_end_users(client, tenants, settings):
    t = tenants.create("team")
    rt = client.app.state.runtime
    day = day_window(datetime.now(UTC))
    rows = [
        {
            "tenant_id": t["tenant_id"],
            "scope": "end_user",
            "scope_id": "carol",
            "meter": "tokens",
            "window": "day",
            "window_start": day.start,
            "window_end": day.end,
            "used": Decimal(9990),
            "limit": Decimal(10000),
            "remaining": Decimal(10),
        }
    ]
    publish(settings.snapshots_dir, "s3", {}, rows)
    assert wait_for(lambda: rt.admission.snapshot_id == "s3")
    r = client.post("/v1/chat/completions", json=chat_body("hello", user="carol"), headers=t["headers"])
    assert r.status_code == 200 and r.headers.get("x-chatmeter-max-tokens-clamped") == "true"
    r = client.post("/v1/chat/completions", json=chat_body("hello", user="carol"), headers=t["headers"])
    assert r.status_code == 429 and r.json()["error"]["scope"] == "end_user"
    assert (
        client.post("/v1/chat/completions", json=chat_body("hello", user="dave"), headers=t["headers"]).status_code
        == 200
    )


def test_end_users_the_snapshot_did_not_count_are_bounded_by_the_tenant(client, tenants, settings):
    """A snapshot made while the tenant's plan did not limit end users has no end-user counts for it
    (end_users_counted false). On team (10,000 tokens a day per end user) the tenant's 9,990 tokens today then
    stand in for any end user's, so none can overshoot; once a snapshot counts them, their own counts apply."""
    t = tenants.create("team")
    rt = client.app.state.runtime
    day = day_window(datetime.now(UTC))
    tenant_day = {
        "tenant_id": t["tenant_id"],
        "scope": "tenant",
        "scope_id": t["tenant_id"],
        "meter": "tokens",
        "window": "day",
        "window_start": day.start,
        "window_end": day.end,
        "used": Decimal(9990),
        "limit": Decimal(50000),
        "remaining": Decimal(40010),
    }
    publish(settings.snapshots_dir, "before", {}, [{**tenant_day, "end_users_counted": False}])
    assert wait_for(lambda: rt.admission.snapshot_id == "before")
    r = client.post("/v1/chat/completions", json=chat_body("x " * 200, user="erin"), headers=t["headers"])
    assert r.status_code == 429 and r.json()["error"]["scope"] == "end_user"
    publish(settings.snapshots_dir, "counted", {}, [{**tenant_day, "end_users_counted": True}])
    assert wait_for(lambda: rt.admission.snapshot_id == "counted")
    r = client.post("/v1/chat/completions", json=chat_body("x " * 200, user="erin"), headers=t["headers"])
    assert r.status_code == 200


def test_restart_rebuilds_counters_from_snapshot_and_log(settings, admin_headers):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(settings)) as client:
        t = client.post("/admin/tenants", json={"name": "A", "plan": "free"}, headers=admin_headers).json()
        headers = {"Authorization": f"Bearer {t['api_key']}"}
        total = sum(
            client.post("/v1/chat/completions", json=chat_body(f"q{i}"), headers=headers).json()["usage"][
                "total_tokens"
            ]
            for i in range(5)
        )
        anchor = client.app.state.runtime.store.get_tenant(t["tenant_id"]).anchor_day
    publish(settings.snapshots_dir, "after", {settings.writer_id: 2}, [month_row(t["tenant_id"], anchor, 500)])
    with TestClient(create_app(settings)) as client:
        state = client.get("/v1/usage", headers=headers).json()
        # Snapshot (500, standing for the first two calls) + the three calls after its watermark.
        rt = client.app.state.runtime
        assert rt.admission.snapshot_id == "after"
        assert rt.admission.retained_events() == 3
        assert state["monthlyUsage"] > 500
    (settings.snapshots_dir / "current.json").unlink()
    with TestClient(create_app(settings)) as client:  # no snapshot: everything comes from the log
        assert client.get("/v1/usage", headers=headers).json()["monthlyUsage"] == total


def test_restart_counts_no_refusal_from_the_log(settings, admin_headers):
    """A refused call's event adds nothing: the start-up rebuild keeps it out of the live counters, as the running
    API did when it refused it (no retained entry, no empty window)."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(settings)) as client:
        t = client.post("/admin/tenants", json={"name": "A", "plan": "free"}, headers=admin_headers).json()
        headers = {"Authorization": f"Bearer {t['api_key']}"}
        rt = client.app.state.runtime
        anchor = rt.store.get_tenant(t["tenant_id"]).anchor_day
        publish(settings.snapshots_dir, "full", {}, [month_row(t["tenant_id"], anchor, 10_000)])
        assert wait_for(lambda: rt.admission.snapshot_id == "full")
        assert client.post("/v1/chat/completions", json=chat_body("hi"), headers=headers).status_code == 429
        assert rt.admission.retained_events() == 0
    with TestClient(create_app(settings)) as client:
        admission = client.app.state.runtime.admission
        assert admission.snapshot_id == "full"
        assert admission.retained_events() == 0
        assert admission.live == {}


def test_a_snapshot_among_folded_events_rereads_them_from_the_log(client, tenants, settings):
    """With the oldest live events folded into sums (as while no snapshot comes for long), a snapshot whose
    watermark falls among them takes exactly those back, re-read from the Parquet log."""
    from serving.eventlog import read_events_after

    t = tenants.create("free")
    rt = client.app.state.runtime
    rt.admission.max_retained = 2
    anchor = rt.store.get_tenant(t["tenant_id"]).anchor_day
    first_seq = rt.log.next_seq
    tokens = [
        client.post("/v1/chat/completions", json=chat_body(f"q{i}", user=f"u{i % 2}"), headers=t["headers"]).json()[
            "usage"
        ]["total_tokens"]
        for i in range(6)
    ]
    assert rt.admission.retained_events() == 2 and rt.admission.folded_windows() > 0
    mark = first_seq + 2  # the first three calls; the first four are folded, so the watermark falls among them
    assert rt.admission.rereads({settings.writer_id: mark})
    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert wait_for(lambda: read_events_after(settings.events_dir, {}, since).num_rows >= 6)  # rolled to Parquet
    publish(settings.snapshots_dir, "s3", {settings.writer_id: mark}, [month_row(t["tenant_id"], anchor, 1000)])
    assert wait_for(lambda: rt.admission.snapshot_id == "s3")
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 1000 + sum(tokens[3:])
    # Past every folded event: the sums go whole, and only the last call stays live.
    publish(settings.snapshots_dir, "s4", {settings.writer_id: mark + 2}, [month_row(t["tenant_id"], anchor, 2000)])
    assert wait_for(lambda: rt.admission.snapshot_id == "s4")
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 2000 + tokens[5]
    assert rt.admission.folded_windows() == 0 and rt.admission.retained_events() == 1
