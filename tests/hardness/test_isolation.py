"""Isolation between tenants: every tenant-scoped route, with one tenant's credentials and another's ids,
answers 404 (or 401/403) and shows nothing of the other; API keys are stored hashed; every /admin route
refuses tenant API keys and widget keys.

Routes are listed from the app itself (by the dependency that authenticates them), so a new tenant-scoped
or admin route fails these tests until it is covered.
"""

import hashlib
from collections.abc import Callable

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.deps import current_caller, require_admin
from serving.routers.widget import widget_caller
from tests.conftest import ADMIN, Tenants, chat_body

CHAT = "/v1/chat/completions"
SECRET = "bravo-secret-7781"  # what tenant B's users said; must never reach tenant A
IDEMPOTENCY_KEY = "order-1"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def routes_by_guard(app) -> dict[str, set[tuple[str, str]]]:
    """(method, path) of every route, grouped by the dependency that authenticates it."""

    def calls(dependant):
        for sub in dependant.dependencies:
            yield sub.call
            yield from calls(sub)

    guards = {current_caller: "api_key", widget_caller: "widget_key", require_admin: "admin"}
    out: dict[str, set[tuple[str, str]]] = {"api_key": set(), "widget_key": set(), "admin": set(), "open": set()}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route.original_route, "dependant", None)
        found = {guards[c] for c in calls(dependant) if c in guards} if dependant else set()
        assert len(found) <= 1, f"{route.path} has several guards: {found}"
        guard = found.pop() if found else "open"
        out[guard].update((method, route.path) for method in route.methods or () if method != "HEAD")
    return out


def widget(t: dict) -> dict[str, str]:
    return {"X-Widget-Key": t["widget_key"], "Origin": "https://shop.example"}


def assert_nothing_of(b: dict, r) -> None:
    """Nothing of tenant B in a response to A: not its id, its users' words, its end users or its keys."""
    for secret in (b["tenant_id"], SECRET, "bravo-user", "bravo-visitor", b["api_key"], b["widget_key"], b["key_id"]):
        assert secret not in r.text, f"{secret!r} leaked into {r.request.method} {r.request.url.path}: {r.text[:300]}"


def with_key_ids(client: TestClient, t: dict) -> dict:
    """The tenant as created, plus the ids of its API key and widget key."""
    for kind, name in (("keys", "key_id"), ("widget-keys", "widget_key_id")):
        t[name] = client.get(f"/admin/tenants/{t['tenant_id']}/{kind}", headers=ADMIN_HEADERS).json()["data"][0][
            "key_id"
        ]
    return t


@pytest.fixture
def two_tenants(client, tenants):
    """Tenant A (the prober) and tenant B with history: an idempotent call, an embedding, a widget session."""
    a, b = (with_key_ids(client, tenants.create("pro", name)) for name in ("Alpha", "Bravo"))
    r = client.post(
        CHAT,
        json=chat_body(SECRET, user="bravo-user"),
        headers={**b["headers"], "Idempotency-Key": IDEMPOTENCY_KEY},
    )
    assert r.status_code == 200
    b["completion_id"] = r.json()["id"]
    embedding = {"model": "text-embedding-3-small", "input": SECRET, "user": "bravo-user"}
    assert client.post("/v1/embeddings", json=embedding, headers=b["headers"]).status_code == 200
    r = client.post("/chat/message", json={"message": SECRET, "user_id": "bravo-visitor"}, headers=widget(b))
    assert r.status_code == 200
    b["session_id"] = r.json()["session_id"]
    return a, b


# --- one probe per tenant-scoped route: A's credentials, B's ids ---


def probe_history(client: TestClient, a: dict, b: dict) -> list:
    r = client.get(f"/chat/history/{b['session_id']}", headers=widget(a))
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    return [r]


def probe_end(client: TestClient, a: dict, b: dict) -> list:
    r = client.post("/chat/end", json={"session_id": b["session_id"]}, headers=widget(a))
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    return [r]


def probe_message(client: TestClient, a: dict, b: dict) -> list:
    # B's session id under A's widget key opens a session of A's: it starts empty, and B's stays B's.
    r = client.post(
        "/chat/message", json={"message": "what did I say?", "session_id": b["session_id"]}, headers=widget(a)
    )
    assert r.status_code == 200
    mine = client.get(f"/chat/history/{b['session_id']}", headers=widget(a))
    assert [m["content"] for m in mine.json()["messages"]][0] == "what did I say?"
    return [r, mine]


def probe_chat(client: TestClient, a: dict, b: dict) -> list:
    # B's Idempotency-Key and body, sent by A: a fresh call of A's, never B's stored answer.
    r = client.post(
        CHAT, json=chat_body(SECRET, user="bravo-user"), headers={**a["headers"], "Idempotency-Key": IDEMPOTENCY_KEY}
    )
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert r.json()["id"] != b["completion_id"]
    return [r]


def probe_embeddings(client: TestClient, a: dict, b: dict) -> list:
    body = {"model": "text-embedding-3-small", "input": "hi", "user": "bravo-user"}
    r = client.post("/v1/embeddings", json=body, headers=a["headers"])
    assert r.status_code == 200
    return [r]


def probe_usage(client: TestClient, a: dict, b: dict) -> list:
    r = client.get("/v1/usage", params={"user": "bravo-user"}, headers=a["headers"])
    assert r.status_code == 200 and r.json()["tenantId"] == a["tenant_id"]
    assert {m["scopeId"] for m in r.json()["meters"] if m["scope"] != "end_user"} <= {a["tenant_id"], a["key_id"]}
    assert all(m["used"] == 0 for m in r.json()["meters"] if m["scope"] == "end_user")
    return [r]


# In this order: history and end while B's session id is B's alone, usage while A has used nothing.
PROBES: dict[tuple[str, str], Callable[[TestClient, dict, dict], list]] = {
    ("GET", "/chat/history/{session_id}"): probe_history,
    ("POST", "/chat/end"): probe_end,
    ("GET", "/v1/usage"): probe_usage,
    ("POST", "/chat/message"): probe_message,
    ("POST", CHAT): probe_chat,
    ("POST", "/v1/embeddings"): probe_embeddings,
}


def test_every_tenant_scoped_route_with_another_tenants_ids_shows_nothing_of_it(client, two_tenants):
    a, b = two_tenants
    guarded = routes_by_guard(client.app)
    scoped = guarded["api_key"] | guarded["widget_key"]
    assert scoped == set(PROBES), f"routes without an isolation probe: {sorted(scoped - set(PROBES))}"
    b_before = client.get("/v1/usage", params={"user": "bravo-user"}, headers=b["headers"]).json()
    for probe in PROBES.values():
        for r in probe(client, a, b):
            assert_nothing_of(b, r)
    # B is untouched: its counters, its session (still open, with its own messages), its stored answer.
    b_after = client.get("/v1/usage", params={"user": "bravo-user"}, headers=b["headers"]).json()
    assert b_after["meters"] == b_before["meters"]
    history = client.get(f"/chat/history/{b['session_id']}", headers=widget(b)).json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"] and history[0]["content"] == SECRET
    more = client.post("/chat/message", json={"message": "more", "session_id": b["session_id"]}, headers=widget(b))
    assert more.status_code == 200  # not 409: A could not end B's session
    replay = client.post(
        CHAT, json=chat_body(SECRET, user="bravo-user"), headers={**b["headers"], "Idempotency-Key": IDEMPOTENCY_KEY}
    )
    assert replay.headers.get("idempotent-replayed") == "true" and replay.json()["id"] == b["completion_id"]


def test_widget_history_read_back_from_transcripts_stays_with_its_tenant(two_tenants_after_restart):
    client, a, b = two_tenants_after_restart
    r = client.get(f"/chat/history/{b['session_id']}", headers=widget(a))
    assert r.status_code == 404
    assert_nothing_of(b, r)
    assert client.post("/chat/end", json={"session_id": b["session_id"]}, headers=widget(a)).status_code == 404
    own = client.get(f"/chat/history/{b['session_id']}", headers=widget(b))  # the probe reads the real thing
    assert own.status_code == 200 and own.json()["messages"][0]["content"] == SECRET


@pytest.fixture
def two_tenants_after_restart(settings):
    """B's widget session only on disk: the app restarted, so history comes from the Parquet transcripts."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        tenants = Tenants(client)
        a, b = (with_key_ids(client, tenants.create("pro", name)) for name in ("Alpha", "Bravo"))
        r = client.post("/chat/message", json={"message": SECRET, "user_id": "bravo-visitor"}, headers=widget(b))
        b["session_id"] = r.json()["session_id"]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.app.state.runtime.sessions.get(b["tenant_id"], b["session_id"]) is None
        yield client, a, b


def test_admin_routes_refuse_another_tenants_key_ids(client, two_tenants):
    a, b = two_tenants
    b_ids = {"keys": b["key_id"], "widget-keys": b["widget_key_id"]}
    with_ids = [(m, p) for m, p in routes_by_guard(client.app)["admin"] if "{tenant_id}" in p and "{key_id}" in p]
    assert with_ids
    for method, path in sorted(with_ids):
        kind = path.split("/")[-2]
        assert kind in b_ids, f"{method} {path}: add tenant B's id of kind {kind!r} to this test"
        url = path.format(tenant_id=a["tenant_id"], key_id=b_ids[kind])
        r = client.request(method, url, headers=ADMIN_HEADERS)
        assert r.status_code == 404, f"{method} {url}: {r.status_code}"
        assert r.json()["error"]["code"] == "key_not_found"
    # B's keys were not revoked through A.
    assert client.get("/v1/usage", headers=b["headers"]).status_code == 200
    assert client.get(f"/chat/history/{b['session_id']}", headers=widget(b)).status_code == 200


# --- keys at rest ---


def test_api_keys_are_stored_only_as_hashes(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        tenants = Tenants(client)
        keys = [tenants.create("pro", f"T{i}")["api_key"] for i in range(3)]
        tenant_id = client.get("/admin/tenants", headers=ADMIN_HEADERS).json()["data"][0]["tenant_id"]
        extra = client.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "backend"}, headers=ADMIN_HEADERS)
        keys.append(extra.json()["api_key"])
        for key in keys:  # used, so the log and the caches have seen them
            assert client.post(CHAT, json=chat_body(), headers={"Authorization": f"Bearer {key}"}).status_code == 200
        open_bytes = b"".join(p.read_bytes() for p in settings.data_dir.glob("metadata.db*"))
    at_rest = b"".join(p.read_bytes() for p in settings.data_dir.rglob("*") if p.is_file())
    for key in keys:
        assert key.encode() not in open_bytes and key.encode() not in at_rest
        # The key's hash is there: the grep looked at the right bytes.
        assert hashlib.sha256(key.encode()).hexdigest().encode() in open_bytes + at_rest


# --- /admin refuses everything but the operator's token ---


def test_every_admin_route_refuses_tenant_api_keys_and_widget_keys(client, two_tenants):
    a, b = two_tenants
    admin_routes = routes_by_guard(client.app)["admin"]
    assert all(path.startswith("/admin") for _, path in admin_routes)
    assert {p for _, p in admin_routes} >= {"/admin/tenants", "/admin/catalog/reload", "/admin/usage/export.csv"}
    unguarded = [(m, p) for g, routes in routes_by_guard(client.app).items() if g != "admin" for m, p in routes]
    assert not [r for r in unguarded if r[1].startswith("/admin")], "an /admin route without require_admin"
    tenants_before = client.get("/admin/tenants", headers=ADMIN_HEADERS).json()
    ids = {"tenant_id": a["tenant_id"], "key_id": b["key_id"], "period": "2026-01"}
    bodies = {"POST": {"name": "Hijack", "plan": "enterprise"}, "PUT": {"plan": "enterprise"}, "PATCH": {}}
    credentials = {
        "tenant api key": {"Authorization": f"Bearer {a['api_key']}"},
        "widget key as bearer": {"Authorization": f"Bearer {a['widget_key']}"},
        "widget key": widget(a),
        "nothing": {},
    }
    for method, path in sorted(admin_routes):
        url = path.format(**ids)
        for name, headers in credentials.items():
            r = client.request(method, url, headers=headers, json=bodies.get(method))
            assert r.status_code in (401, 403), f"{method} {url} with {name}: {r.status_code} {r.text[:200]}"
            assert r.json()["error"]["type"] in ("authentication_error", "permission_error")
            assert_nothing_of(b, r)
    assert client.get("/admin/tenants", headers=ADMIN_HEADERS).json() == tenants_before
