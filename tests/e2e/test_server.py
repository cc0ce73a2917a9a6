"""`chatmeter serve` as a separate process, driven by the official OpenAI SDK."""

import http.client
import threading
import time
import uuid
from collections import Counter

import httpx
import openai
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def _client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def _usage(server: Server, key: str) -> dict:
    return httpx.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()


def _logged_tokens(server: Server, tenant_id: str) -> int:
    rows = server.events().to_pylist()
    unique = {r["event_id"]: r for r in rows if r["tenant_id"] == tenant_id and r["status"] != "rejected"}
    return sum(r["input_tokens"] + r["output_tokens"] for r in unique.values())


def test_openai_sdk_streaming_and_not(server):
    t = server.create_tenant("pro")
    client = _client(server, t["api_key"])
    reply = client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=60, user="u1", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens <= 60
    stream = client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=60, stream=True, messages=[{"role": "user", "content": "Stream hello"}]
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text and usage is not None
    reported = reply.usage.total_tokens + usage.total_tokens
    assert _usage(server, t["api_key"])["monthlyUsage"] == reported
    server.stop()  # a clean stop rolls the log into Parquet
    assert _logged_tokens(server, t["tenant_id"]) == reported


def test_an_idle_connection_stays_open_longer_than_the_sdk_keeps_it(server):
    """The OpenAI SDK's connections (httpx's default) are reused until idle for 5 s. Had the server closed idle
    connections after 5 s too (uvicorn's default), a request sent as it closed one was reset: the soak met one
    such ReadError in 92,000 requests. A connection idle past the client's limit is still served."""
    client_expiry = httpx.Limits().keepalive_expiry
    assert client_expiry is not None
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        time.sleep(client_expiry + 0.5)
        conn.request("GET", "/healthz")
        second = conn.getresponse()  # raises RemoteDisconnected had the server closed the connection
        second.read()
        reused = sock is not None and conn.sock is sock
    finally:
        conn.close()
    assert (first.status, second.status) == (200, 200)
    assert reused


def test_refusal_reaches_the_sdk_as_a_rate_limit_error_without_retries(server):
    t = server.create_tenant("free")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=t["api_key"], max_retries=3, timeout=30)
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(100):
            client.chat.completions.create(
                model="gpt-4o-mini", max_tokens=1000, messages=[{"role": "user", "content": "word " * 2000}]
            )
    err = info.value
    assert err.response.headers["x-should-retry"] == "false"
    assert err.body["type"] == "usage_limit_exceeded"
    assert err.body["code"] == "tokens_month_limit"


def test_sixteen_concurrent_clients_never_pass_the_free_limit(server):
    t = server.create_tenant("free")
    reported: list[int] = []
    refusals = Counter()
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        client = _client(server, t["api_key"])
        for i in range(60):
            size = 20 + (worker * 37 + i * 11) % 300
            try:
                kwargs = dict(
                    model="gpt-4o-mini",
                    max_tokens=50 + (i * 13) % 400,
                    user=f"u{worker % 4}",
                    messages=[{"role": "user", "content": "token " * size}],
                )
                if i % 3 == 0:
                    stream = client.chat.completions.create(stream=True, **kwargs)
                    total = next(c.usage.total_tokens for c in stream if c.usage)
                else:
                    total = client.chat.completions.create(**kwargs).usage.total_tokens
            except openai.RateLimitError:
                with lock:
                    refusals[worker] += 1
                continue
            with lock:
                reported.append(total)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = _usage(server, t["api_key"])
    assert sum(refusals.values()) > 0
    assert state["monthlyUsage"] == sum(reported)
    assert state["monthlyUsage"] <= 10_000
    server.stop()
    assert _logged_tokens(server, t["tenant_id"]) == sum(reported)


def test_usage_and_idempotency_survive_a_restart(server):
    t = server.create_tenant("pro")
    client = _client(server, t["api_key"])
    first = client.chat.completions.create(
        model="gpt-4o-mini",
        max_tokens=40,
        messages=[{"role": "user", "content": "a"}],
        extra_headers={"Idempotency-Key": "pay-1"},
    )
    before = _usage(server, t["api_key"])["monthlyUsage"]
    server.stop()
    server.start()
    assert _usage(server, t["api_key"])["monthlyUsage"] == before
    again = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=40,
        messages=[{"role": "user", "content": "a"}],
        extra_headers={"Idempotency-Key": "pay-1"},
    )
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.parse().id == first.id
    assert _usage(server, t["api_key"])["monthlyUsage"] == before


def test_kill9_under_load_loses_no_acknowledged_event(server):
    t = server.create_tenant("enterprise")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                key = str(uuid.uuid4())
                try:
                    r = http.post(
                        f"{server.url}/v1/chat/completions",
                        headers={"Authorization": f"Bearer {t['api_key']}", "Idempotency-Key": key},
                        json={
                            "model": "gpt-4o-mini",
                            "max_tokens": 20,
                            "messages": [{"role": "user", "content": "load"}],
                        },
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    with lock:
                        acknowledged.append(key)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 300:
        threading.Event().wait(0.01)
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join()
    server.start()  # recovery rolls whatever the log holds into Parquet
    server.stop()
    logged = Counter(r["idempotency_key"] for r in {e["event_id"]: e for e in server.events().to_pylist()}.values())
    missing = [k for k in acknowledged if logged[k] != 1]
    assert not missing, f"{len(missing)} acknowledged requests not in the log exactly once"
    assert sum(1 for r in server.events().to_pylist() if r["idempotency_key"] in set(acknowledged)) == len(acknowledged)
