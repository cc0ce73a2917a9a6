"""Faults: a usage log whose disk refuses writes, an upstream model that fails, stalls or drops a stream,
a client that hangs up mid-stream, and limit snapshots that cannot be trusted.

In every case the hold goes back, nothing is acknowledged that is not durable, and only what was
delivered is metered.
"""

import errno
import logging
from contextlib import contextmanager

import httpx
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from fastapi.testclient import TestClient

from chatmeter.schemas import EVENT_SCHEMA
from serving import eventlog
from serving.app import create_app
from serving.providers import make_provider
from serving.providers.base import ChatRequest
from tests.conftest import Tenants, chat_body
from tests.doubles import OPENAI_KEY, Behaviour
from tests.doubles.faulty_disk import FaultyDisk
from tests.hardness.conftest import meter, serve_in_thread, sse_events, wait_for
from tests.serving.test_snapshots import month_row, publish, publish_table

CHAT = "/v1/chat/completions"
UPSTREAM_TIMEOUT_S = 0.5


def logged(settings, tenant_id: str) -> list[dict]:
    """The tenant's events in the Parquet log (read after the app stopped), deduplicated on event_id."""
    if not settings.events_dir.exists():
        return []
    table = ds.dataset(settings.events_dir, format="parquet", partitioning="hive", schema=EVENT_SCHEMA).to_table(
        filter=ds.field("tenant_id") == tenant_id
    )
    return list({r["event_id"]: r for r in table.to_pylist()}.values())


def tokens_state(client: TestClient, tenant: dict) -> dict:
    """The tenant's monthly token counter: used and reserved."""
    entry = meter(client.get("/v1/usage", headers=tenant["headers"]).json(), "tokens", "month", "tenant")
    return {"used": entry["used"], "reserved": entry["reserved"]}


def assert_envelope(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["type"] and error["message"]
    return error


# --- the log's disk refuses writes ---


@pytest.mark.parametrize("refusal", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_a_log_that_cannot_be_written_answers_503_acknowledges_nothing_and_recovers(settings, monkeypatch, refusal):
    disk = FaultyDisk(settings.data_dir.parent / "disk.json")
    monkeypatch.setattr(eventlog, "WRITER_COMMAND", disk.command)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        rt = client.app.state.runtime
        t = Tenants(client).create("pro")
        widget = {"X-Widget-Key": t["widget_key"]}
        first = client.post(CHAT, json=chat_body("before the fault"), headers=t["headers"])
        assert first.status_code == 200
        before = client.get("/v1/usage", headers=t["headers"]).json()
        written = rt.log.events_written

        disk.fail(write="refuse", errno=refusal)
        retry = {**t["headers"], "Idempotency-Key": "written-once"}
        r = client.post(CHAT, json=chat_body("while the disk refuses"), headers=retry)
        assert_envelope(r, 503, "log_unavailable")
        assert r.headers["retry-after"]
        r = client.post(CHAT, json=chat_body("streamed while the disk refuses", stream=True), headers=t["headers"])
        events = sse_events(r.content)
        errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
        assert [(e["type"], e["code"]) for e in errors] == [("service_unavailable", "log_unavailable")]
        assert not any(isinstance(e, dict) and e.get("usage") for e in events) and "[DONE]" not in events
        r = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=t["headers"])
        assert_envelope(r, 503, "log_unavailable")
        assert_envelope(client.post("/chat/message", json={"message": "hello"}, headers=widget), 503, "log_unavailable")

        # Nothing was acknowledged: no event counted, the counters as they were, no hold left open.
        assert rt.log.events_written == written
        assert rt.admission.open_holds() == 0
        assert client.get("/v1/usage", headers=t["headers"]).json()["meters"] == before["meters"]

        disk.heal()  # the disk is back
        again = client.post(CHAT, json=chat_body("while the disk refuses"), headers=retry)
        assert again.status_code == 200 and "idempotent-replayed" not in again.headers
        streamed = client.post(CHAT, json=chat_body("after the fault", stream=True), headers=t["headers"])
        usage = [e["usage"] for e in sse_events(streamed.content) if isinstance(e, dict) and e.get("usage")]
        turn = client.post("/chat/message", json={"message": "hello again"}, headers=widget)
        assert turn.status_code == 200
        told = [
            first.json()["usage"]["total_tokens"],
            again.json()["usage"]["total_tokens"],
            usage[0]["total_tokens"],
            turn.json()["usage"]["total_tokens"],
        ]
        assert tokens_state(client, t) == {"used": sum(told), "reserved": 0}
        assert rt.admission.open_holds() == 0
    events = logged(settings, t["tenant_id"])
    assert sorted(e["input_tokens"] + e["output_tokens"] for e in events) == sorted(told)
    assert {e["status"] for e in events} == {"ok"}
    assert [e["idempotency_key"] for e in events].count("written-once") == 1


# --- the upstream model fails ---


@contextmanager
def openai_app(settings, timeout_s: float = UPSTREAM_TIMEOUT_S):
    """The app in-process with the OpenAI provider pointed at the double (see the openai_api fixture)."""
    app = create_app(settings, provider=make_provider("openai", timeout_s=timeout_s))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("behaviour", "sdk_timeout_s", "request_timeout_s", "status", "code"),
    [
        (Behaviour(fail_status=500), 30.0, 120.0, 502, "upstream_error"),
        (Behaviour(hang_s=10), UPSTREAM_TIMEOUT_S, 120.0, 504, "upstream_timeout"),  # the SDK's own timeout
        (Behaviour(hang_s=10), 30.0, UPSTREAM_TIMEOUT_S, 504, "upstream_timeout"),  # the request's timeout
    ],
    ids=["http-500", "sdk-timeout", "request-timeout"],
)
def test_a_failed_upstream_call_releases_its_hold_and_meters_nothing(
    settings, openai_api, behaviour, sdk_timeout_s, request_timeout_s, status, code
):
    settings.request_timeout_s = request_timeout_s
    openai_api.state.behaviour = behaviour
    with openai_app(settings, timeout_s=sdk_timeout_s) as client:
        rt = client.app.state.runtime
        t = Tenants(client).create("pro")
        r = client.post(CHAT, json=chat_body("will this fail?", max_tokens=200), headers=t["headers"])
        assert_envelope(r, status, code)
        assert OPENAI_KEY[:8] not in r.text  # the upstream's message (it echoes the key) is not passed on
        assert rt.admission.open_holds() == 0
        assert tokens_state(client, t) == {"used": 0, "reserved": 0}
    [event] = logged(settings, t["tenant_id"])
    assert (event["status"], event["error_code"]) == ("error", code)
    assert event["input_tokens"] == event["output_tokens"] == 0


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        (Behaviour(drop_after_chunks=3), "upstream_error"),
        (Behaviour(hang_after_chunks=3, hang_s=10), "upstream_timeout"),
    ],
    ids=["dropped", "stalled"],
)
def test_a_stream_cut_mid_way_meters_the_estimate_of_what_was_delivered(settings, openai_api, behaviour, code):
    openai_api.state.behaviour = behaviour
    content = "Tell me something long."
    with openai_app(settings) as client:
        rt = client.app.state.runtime
        t = Tenants(client).create("pro")
        r = client.post(CHAT, json=chat_body(content, max_tokens=300, stream=True), headers=t["headers"])
        assert r.status_code == 200
        events = sse_events(r.content)
        delivered = "".join(
            e["choices"][0]["delta"].get("content") or "" for e in events if isinstance(e, dict) and e.get("choices")
        )
        assert delivered and Behaviour().text.startswith(delivered) and delivered != Behaviour().text
        errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
        assert [e["code"] for e in errors] == [code] and events[-1] == "[DONE]"
        assert not any(isinstance(e, dict) and e.get("usage") for e in events)
        request = ChatRequest(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": content}],
            max_tokens=int(r.headers["x-chatmeter-max-tokens"]),
        )
        estimate = rt.provider.estimate_usage(request, delivered)
        assert estimate.output_tokens > 0
        assert rt.admission.open_holds() == 0
        assert tokens_state(client, t) == {"used": estimate.total_tokens, "reserved": 0}
    [event] = logged(settings, t["tenant_id"])
    assert (event["status"], event["error_code"], event["usage_estimated"]) == ("error", code, True)
    assert (event["input_tokens"], event["output_tokens"]) == (estimate.input_tokens, estimate.output_tokens)


def test_a_client_hanging_up_mid_stream_leaves_no_hold_and_records_an_error_event(settings, openai_api):
    # The double sends two chunks, then stalls: the client hangs up while the answer is being written.
    openai_api.state.behaviour = Behaviour(hang_after_chunks=2, hang_s=10)
    app = create_app(settings, provider=make_provider("openai", timeout_s=30))
    with serve_in_thread(app) as url:
        rt = app.state.runtime
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        t = httpx.post(f"{url}/admin/tenants", json={"name": "Leaver", "plan": "pro"}, headers=admin).json()
        auth = {"Authorization": f"Bearer {t['api_key']}"}
        written = rt.log.events_written
        delivered = ""
        with httpx.Client(base_url=url, timeout=30) as http:
            body = chat_body("Start answering, I will leave.", max_tokens=300, stream=True)
            with http.stream("POST", CHAT, json=body, headers=auth) as r:
                assert r.status_code == 200
                admitted = int(r.headers["x-chatmeter-max-tokens"])
                for line in r.iter_lines():
                    for event in sse_events(line):
                        delivered += event["choices"][0]["delta"].get("content") or ""
                    if len(delivered.split()) >= 4:  # both chunks of two words are in: hang up
                        break
        assert wait_for(lambda: rt.log.events_written == written + 1 and rt.admission.open_holds() == 0)
        state = httpx.get(f"{url}/v1/usage", headers=auth).json()
        assert meter(state, "tokens", "month", "tenant")["reserved"] == 0
        used = state["monthlyUsage"]
    # Metered: the estimate of the two chunks delivered, nothing of the answer never written.
    request = ChatRequest(
        model="gpt-4o-mini", messages=[{"role": "user", "content": body["messages"][0]["content"]}], max_tokens=admitted
    )
    estimate = rt.provider.estimate_usage(request, delivered)
    [event] = logged(settings, t["tenant_id"])
    assert (event["status"], event["error_code"], event["usage_estimated"]) == ("error", "client_disconnected", True)
    assert (event["input_tokens"], event["output_tokens"]) == (estimate.input_tokens, estimate.output_tokens)
    assert estimate.output_tokens > 0 and estimate.total_tokens == used


# --- limit snapshots that cannot be trusted (corrupt and half-written files: tests/serving/test_snapshots.py) ---


def _untrustworthy(tenant_id: str, anchor: int) -> dict[str, pa.Table | str]:
    good = pa.Table.from_pylist([month_row(tenant_id, anchor, 7)])
    return {
        "wrong-columns": good.rename_columns(["count" if n == "used" else n for n in good.column_names]),
        "missing-file": "limits_nowhere.parquet",
        "null-used": good.set_column(good.column_names.index("used"), "used", pa.array([None], pa.decimal128(38, 6))),
        "text-window-start": good.set_column(
            good.column_names.index("window_start"), "window_start", pa.array(["yesterday"])
        ),
    }


@pytest.mark.parametrize("case", ["wrong-columns", "missing-file", "null-used", "text-window-start"])
def test_an_untrustworthy_snapshot_is_ignored_live_and_at_start_up(settings, caplog, case):
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        rt = client.app.state.runtime
        t = Tenants(client).create("free")
        anchor = rt.store.get_tenant(t["tenant_id"]).anchor_day
        publish(settings.snapshots_dir, "good", {}, [month_row(t["tenant_id"], anchor, 1234)])
        assert wait_for(lambda: rt.admission.snapshot_id == "good")
        errors = rt.snapshot_errors
        with caplog.at_level(logging.ERROR, logger="serving.runtime"):
            bad = _untrustworthy(t["tenant_id"], anchor)[case]
            if isinstance(bad, str):
                publish_table(settings.snapshots_dir, "bad", pa.table({"x": [1]}), file=bad)
            else:
                publish_table(settings.snapshots_dir, "bad", bad)
            assert wait_for(lambda: rt.snapshot_errors > errors)
        assert rt.admission.snapshot_id == "good"
        assert any("snapshot ignored" in r.getMessage() for r in caplog.records)
        assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 1234
    # A restart with the bad snapshot current starts all the same, from the log alone.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        rt = client.app.state.runtime
        assert rt.snapshot_errors == 1 and rt.admission.snapshot_id is None
        assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 0
        assert client.post(CHAT, json=chat_body(), headers=t["headers"]).status_code == 200


def test_a_snapshot_going_back_in_time_is_ignored(client, tenants, settings, caplog):
    t = tenants.create("free")
    rt = client.app.state.runtime
    r = client.post(CHAT, json=chat_body(), headers=t["headers"])
    live = r.json()["usage"]["total_tokens"]
    anchor = rt.store.get_tenant(t["tenant_id"]).anchor_day
    seq = rt.log.next_seq - 1
    publish(settings.snapshots_dir, "new", {settings.writer_id: seq}, [month_row(t["tenant_id"], anchor, 500 + live)])
    assert wait_for(lambda: rt.admission.snapshot_id == "new")
    with caplog.at_level(logging.ERROR, logger="serving.admission"):
        # An older snapshot, republished (a pipeline restored from backup): its watermark is behind.
        publish(settings.snapshots_dir, "old", {settings.writer_id: seq - 1}, [month_row(t["tenant_id"], anchor, 9)])
        assert wait_for(lambda: any("back in time" in r.getMessage() for r in caplog.records))
    assert rt.admission.snapshot_id == "new"
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 500 + live
