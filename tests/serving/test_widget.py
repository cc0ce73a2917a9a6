"""The widget endpoints: publishable key + allowed origins, metered turns with tool steps, history, end."""

import json

ORIGIN = "https://shop.example"


def _widget(t: dict, origin: str | None = ORIGIN) -> dict:
    headers = {"X-Widget-Key": t["widget_key"]}
    if origin:
        headers["Origin"] = origin
    return headers


def test_widget_script_is_served(client):
    r = client.get("/widget.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert "attachShadow" in r.text and "X-Widget-Key" in r.text


def test_message_history_and_end(client, tenants):
    t = tenants.create("pro")
    r = client.post(
        "/chat/message", json={"message": "Hello, who are you?", "user_id": "visitor-1"}, headers=_widget(t)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["access-control-allow-origin"] == ORIGIN
    session = body["session_id"]
    assert body["message"]["content"]
    assert body["meter"]["monthlyUsage"] == body["usage"]["total_tokens"] > 0
    r2 = client.post("/chat/message", json={"message": "And again", "session_id": session}, headers=_widget(t))
    assert r2.status_code == 200
    history = client.get(f"/chat/history/{session}", headers=_widget(t)).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    end = client.post("/chat/end", json={"session_id": session}, headers=_widget(t)).json()
    assert end["ended"] and end["message_count"] == 4
    assert end["tokens_total"] == body["usage"]["total_tokens"] + r2.json()["usage"]["total_tokens"]
    again = client.post("/chat/message", json={"message": "more", "session_id": session}, headers=_widget(t))
    assert again.status_code == 409


def test_tool_steps_are_metered_as_one_total(client, tenants):
    t = tenants.create("pro")
    r = client.post("/chat/message", json={"message": "please check_inventory for sku A-17"}, headers=_widget(t))
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["tool_calls"] >= 1
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["monthlyUsage"] == usage["total_tokens"]
    requests = next(
        m for m in state["meters"] if (m["meter"], m["window"], m["scope"]) == ("requests", "day", "tenant")
    )
    assert requests["used"] == 1  # one turn, one event, whatever the steps


def test_streamed_turn_ends_with_usage_and_meter(client, tenants):
    t = tenants.create("pro")
    r = client.post("/chat/message", json={"message": "Stream me an answer", "stream": True}, headers=_widget(t))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block.strip()]
    names = [block.split("\n")[0].removeprefix("event: ") for block in events]
    assert names[0] == "delta" and names[-1] == "done"
    done = json.loads(events[-1].split("data: ", 1)[1])
    assert done["usage"]["total_tokens"] == done["meter"]["monthlyUsage"]


def test_origin_and_key_are_checked(client, tenants, admin_headers):
    t = tenants.create("pro")
    r = client.post(
        f"/admin/tenants/{t['tenant_id']}/widget-keys", json={"allowed_origins": [ORIGIN]}, headers=admin_headers
    )
    strict = {"widget_key": r.json()["widget_key"]}
    assert client.post("/chat/message", json={"message": "hi"}, headers=_widget(strict)).status_code == 200
    bad = client.post("/chat/message", json={"message": "hi"}, headers=_widget(strict, "https://evil.example"))
    assert bad.status_code == 403 and bad.json()["error"]["code"] == "origin_not_allowed"
    assert client.post("/chat/message", json={"message": "hi"}, headers=_widget(strict, None)).status_code == 403
    assert client.post("/chat/message", json={"message": "hi"}).status_code == 401
    assert (
        client.post(
            "/chat/message", json={"message": "hi"}, headers={"X-Widget-Key": "cm_pub_nope", "Origin": ORIGIN}
        ).status_code
        == 401
    )
    # An API key is not a widget key, and a widget key is not an API key.
    assert (
        client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {strict['widget_key']}"},
        ).status_code
        == 401
    )
    pre = client.options("/chat/message", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and "X-Widget-Key" in pre.headers["access-control-allow-headers"]


def test_sessions_are_private_to_their_tenant(client, tenants):
    a, b = tenants.create("pro", "A"), tenants.create("pro", "B")
    session = client.post("/chat/message", json={"message": "secret order 77"}, headers=_widget(a)).json()["session_id"]
    assert client.get(f"/chat/history/{session}", headers=_widget(b)).status_code == 404
    assert client.post("/chat/end", json={"session_id": session}, headers=_widget(b)).status_code == 404
    r = client.post("/chat/message", json={"message": "hi", "session_id": session}, headers=_widget(b))
    assert r.status_code == 200  # a new session of B's that happens to share the id; A's stays untouched
    assert len(client.get(f"/chat/history/{session}", headers=_widget(a)).json()["messages"]) == 2


def test_widget_refusal_at_the_limit(client, tenants):
    t = tenants.create("free")
    for i in range(200):
        r = client.post("/chat/message", json={"message": "tell me everything " * 50 + str(i)}, headers=_widget(t))
        if r.status_code != 200:
            break
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "usage_limit_exceeded"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyUsage"] <= 10000


def test_bad_widget_input(client, tenants):
    t = tenants.create("pro")
    for body in (
        {},
        {"message": ""},
        {"message": "x" * 9000},
        {"message": "hi", "session_id": "../etc"},
        {"message": "hi", "surprise": 1},
    ):
        r = client.post("/chat/message", json=body, headers=_widget(t))
        assert r.status_code in (400, 422), (body, r.status_code)
