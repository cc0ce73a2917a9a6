"""POST /v1/chat/completions and GET /v1/usage, in-process with the simulated provider."""

import json

from tests.conftest import chat_body


def _sse(text: str) -> list[dict]:
    chunks = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[6:]))
    return chunks


def test_completion_reports_usage_and_meters_it(client, tenants):
    t = tenants.create("free")
    r = client.post("/v1/chat/completions", json=chat_body(max_tokens=40), headers=t["headers"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    usage = body["usage"]
    assert usage["completion_tokens"] <= 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] == usage["total_tokens"]
    assert state["remaining"] == 10_000 - usage["total_tokens"]
    assert state["subscriptionTier"] == "free"
    assert state["warningLevel"] == "ok"


def test_stream_ends_with_usage_chunk_and_done(client, tenants):
    t = tenants.create("pro")
    r = client.post("/v1/chat/completions", json=chat_body(max_tokens=30, stream=True), headers=t["headers"])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith("data: [DONE]")
    chunks = _sse(r.text)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] == usage["total_tokens"]


def test_usage_level_thresholds(client, tenants, settings):
    from serving.usage import warning_level

    assert warning_level(7499, 10000) == "ok"
    assert warning_level(7500, 10000) == "warning"
    assert warning_level(8999, 10000) == "warning"
    assert warning_level(9000, 10000) == "critical"


def test_refusal_at_the_limit_is_the_documented_429(client, tenants):
    t = tenants.create("free")
    big = "word " * 3000  # about 3,000 tokens of input
    seen_429 = None
    for _ in range(10):
        r = client.post("/v1/chat/completions", json=chat_body(big, max_tokens=500), headers=t["headers"])
        if r.status_code == 429:
            seen_429 = r
            break
        assert r.status_code == 200, r.text
    assert seen_429 is not None
    assert seen_429.headers["x-should-retry"] == "false"
    assert int(seen_429.headers["retry-after"]) > 0
    err = seen_429.json()["error"]
    assert err["type"] == "usage_limit_exceeded"
    assert err["code"] == "tokens_month_limit"
    assert err["limit"] == 10000
    assert err["used"] <= 10000
    assert err["resets_at"].startswith("20")
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] <= 10000


def test_max_tokens_is_clamped_to_the_headroom(client, tenants):
    t = tenants.create("free")
    filler = "word " * 4000
    used = 0
    while True:
        r = client.post("/v1/chat/completions", json=chat_body(filler, max_tokens=1), headers=t["headers"])
        if r.status_code != 200:
            break
        used += r.json()["usage"]["total_tokens"]
        if 10_000 - used < 4100:
            break
    r = client.post("/v1/chat/completions", json=chat_body("short question", max_tokens=5000), headers=t["headers"])
    assert r.status_code == 200, r.text
    assert r.headers["x-chatmeter-max-tokens-clamped"] == "true"
    clamped = int(r.headers["x-chatmeter-max-tokens"])
    assert clamped < 5000
    assert r.json()["usage"]["completion_tokens"] <= clamped
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] <= 10_000


def test_rejected_request_is_recorded_but_meters_nothing(client, tenants):
    t = tenants.create("free")
    rt = client.app.state.runtime
    before = rt.log.events_written
    r = client.post("/v1/chat/completions", json=chat_body("x " * 12000, max_tokens=10), headers=t["headers"])
    assert r.status_code == 429
    assert rt.log.events_written == before + 1
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] == 0


def test_idempotency_key_replays_once_and_meters_once(client, tenants):
    t = tenants.create("pro")
    headers = {**t["headers"], "Idempotency-Key": "order-42"}
    first = client.post("/v1/chat/completions", json=chat_body("retry me"), headers=headers)
    second = client.post("/v1/chat/completions", json=chat_body("retry me"), headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.headers.get("idempotent-replayed") == "true"
    assert first.json() == second.json()
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] == first.json()["usage"]["total_tokens"]
    other = client.post("/v1/chat/completions", json=chat_body("something else"), headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_mismatch"


def test_idempotency_keys_are_per_tenant(client, tenants):
    a, b = tenants.create("pro", "A"), tenants.create("pro", "B")
    ra = client.post("/v1/chat/completions", json=chat_body("same"), headers={**a["headers"], "Idempotency-Key": "k"})
    rb = client.post("/v1/chat/completions", json=chat_body("same"), headers={**b["headers"], "Idempotency-Key": "k"})
    assert ra.status_code == rb.status_code == 200
    assert "idempotent-replayed" not in rb.headers
    assert client.get("/v1/usage", headers=b["headers"]).json()["monthlyUsage"] > 0


def test_end_user_field_is_metered_per_user(client, tenants):
    t = tenants.create("team")
    for user in ("alice", "alice", "bob"):
        r = client.post("/v1/chat/completions", json=chat_body(user=user), headers=t["headers"])
        assert r.status_code == 200
    alice = client.get("/v1/usage", params={"user": "alice"}, headers=t["headers"]).json()
    row = next(m for m in alice["meters"] if (m["scope"], m["meter"], m["window"]) == ("end_user", "tokens", "day"))
    assert row["scopeId"] == "alice"
    assert row["limit"] == 10000
    tenant_row = next(
        m for m in alice["meters"] if (m["scope"], m["meter"], m["window"]) == ("tenant", "requests", "day")
    )
    assert tenant_row["used"] == 3
    assert (
        row["used"]
        < next(m for m in alice["meters"] if (m["scope"], m["meter"], m["window"]) == ("tenant", "tokens", "day"))[
            "used"
        ]
    )


def test_end_user_daily_limit_refuses_that_user_only(client, tenants):
    t = tenants.create("team")
    filler = "word " * 3000
    for _ in range(10):
        r = client.post(
            "/v1/chat/completions", json=chat_body(filler, max_tokens=100, user="heavy"), headers=t["headers"]
        )
        if r.status_code == 429:
            break
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "tokens_day_limit"
    assert r.json()["error"]["scope"] == "end_user"
    ok = client.post("/v1/chat/completions", json=chat_body(user="light"), headers=t["headers"])
    assert ok.status_code == 200


def test_embeddings_are_metered_on_their_own_meter(client, tenants):
    t = tenants.create("team")
    r = client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a b c", "d e"]}, headers=t["headers"]
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2
    state = client.get("/v1/usage", headers=t["headers"]).json()
    emb = next(
        m for m in state["meters"] if (m["meter"], m["window"], m["scope"]) == ("embedding_tokens", "day", "tenant")
    )
    assert emb["used"] == body["usage"]["total_tokens"] > 0
    assert state["monthlyUsage"] == 0


def test_credits_plan_refuses_when_credits_run_out(client, tenants):
    t = tenants.create("credits_free")  # 100 credits a month, 1 per gpt-4o-mini call, 3 per gpt-4o call
    codes = set()
    for _ in range(40):
        r = client.post(
            "/v1/chat/completions", json={**chat_body(max_tokens=5), "model": "gpt-4o"}, headers=t["headers"]
        )
        codes.add(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "credits_month_limit"
            break
    assert 429 in codes
    state = client.get("/v1/usage", headers=t["headers"]).json()
    credits = next(
        m for m in state["meters"] if (m["meter"], m["window"], m["scope"]) == ("credits", "month", "tenant")
    )
    assert credits["used"] == 99  # 33 calls of 3 credits; the 34th would pass 100


def _metric(text: str, line_start: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start))


def test_metrics_and_health(client, tenants):
    t = tenants.create("free")
    before = client.get("/metrics").text
    r = client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"])
    usage = r.json()["usage"]
    client.post("/v1/chat/completions", json=chat_body(max_tokens=10**6), headers=t["headers"])  # clamped
    assert client.get("/healthz").json()["status"] == "ok"
    text = client.get("/metrics").text
    for outcome, added in (("admitted", 1), ("clamped", 1), ("refused", 0)):
        name = f'chatmeter_admissions_total{{outcome="{outcome}"}}'
        assert _metric(text, name) == _metric(before, name) + added
    name = 'chatmeter_tokens_metered_total{direction="input"}'
    assert _metric(text, name) >= _metric(before, name) + usage["prompt_tokens"]
    assert _metric(text, "chatmeter_log_events_written") >= 2


def test_usage_details_end_users_only_where_the_plan_limits_them(client, tenants):
    # The snapshot counts end users only for what a plan limits per end user (team: tokens per day), so the
    # detail shows nothing else for them: it would be live usage since the last snapshot only.
    for plan, expected in (("pro", set()), ("team", {("tokens", "day")})):
        t = tenants.create(plan)
        body = {**chat_body(max_tokens=20), "user": "alice"}
        assert client.post("/v1/chat/completions", json=body, headers=t["headers"]).status_code == 200
        state = client.get("/v1/usage", params={"user": "alice"}, headers=t["headers"]).json()
        end_user = {(d["meter"], d["window"]) for d in state["meters"] if d["scope"] == "end_user"}
        assert end_user == expected, plan
        assert {d["scope"] for d in state["meters"]} >= {"tenant", "key"}
