"""Schemathesis against the app's own OpenAPI schema: no generated input, valid or not, on any operation,
gets a 5xx.

The app runs in-process (ASGI) on its own data dir with the simulated model. Requests carry real
credentials (the operator's token on /admin, a tenant key elsewhere, the tenant's widget key on /chat), so
the generated input reaches the handlers instead of stopping at authentication; for half the cases, ids are
swapped for real ones and the model for a priced one, so the handlers are exercised past their 404 or 400.

One test per operation, parametrized from the schema itself, so a new route is fuzzed without a change here.
(schemathesis' lazy `from_fixture` loader does not run on this pytest, so strategies are drawn directly.)
"""

import zlib
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from chatmeter.settings import Settings
from serving.app import create_app
from tests.conftest import ADMIN

FUZZ_MAX_EXAMPLES = 15
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
# The operations as the app documents them; building the app reads no files and starts nothing.
OPERATIONS = [
    (method.upper(), path)
    for path, methods in create_app(Settings(_env_file=None)).openapi()["paths"].items()
    for method in methods
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[dict]:
    app = create_app(
        Settings(
            data_dir=tmp_path_factory.mktemp("fuzz") / "data",
            admin_token=ADMIN,
            wal_roll_age_s=0.2,
            auth_cache_ttl_s=0.0,
            STRIPE_WEBHOOK_SECRET="whsec_fuzz",  # configured, so a bad signature is a 400, not a 503
            _env_file=None,
        )
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    with asgi.get_client(app) as http:
        caller, target = (
            http.post("/admin/tenants", json={"name": name, "plan": "enterprise"}, headers=ADMIN_HEADERS).json()
            for name in ("Fuzz caller", "Fuzz target")
        )
        tenant = f"/admin/tenants/{target['tenant_id']}"
        ids = {
            kind: http.get(f"{tenant}/{kind}", headers=ADMIN_HEADERS).json()["data"][0]["key_id"]
            for kind in ("keys", "widget-keys")
        }
        widget = {"X-Widget-Key": caller["widget_key"]}
        session_id = http.post("/chat/message", json={"message": "hello"}, headers=widget).json()["session_id"]
    yield {
        "schema": schema,
        "caller": caller,
        "session_id": session_id,
        "target": {"tenant_id": target["tenant_id"], **ids},
    }
    asgi.shutdown_lifespans()  # closes the runtime: the log is flushed and its threads stop


def prepare(case, fuzzed: dict) -> None:
    """Real credentials; for half the cases (chosen by their content, so runs repeat) real ids and a priced
    model. The admin routes get another tenant than the caller, so suspending it or revoking its keys stops
    no later case."""
    path = case.operation.path
    if path.startswith("/admin"):
        credentials = ADMIN_HEADERS
    else:
        caller = fuzzed["caller"]
        credentials = {"Authorization": f"Bearer {caller['api_key']}", "X-Widget-Key": caller["widget_key"]}
    if zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode()) % 2 == 0:
        params = case.path_parameters or {}
        target = fuzzed["target"]
        if "tenant_id" in params:
            params["tenant_id"] = target["tenant_id"]
        if "key_id" in params:
            params["key_id"] = target["widget-keys" if "/widget-keys/" in path else "keys"]
        if "session_id" in params:
            params["session_id"] = fuzzed["session_id"]
        if isinstance(case.body, dict):
            # A model with a price, so the call gets past the catalog check and is really metered.
            if "model" in case.body:
                case.body["model"] = "text-embedding-3-small" if path == "/v1/embeddings" else "gpt-4o-mini"
            if "session_id" in case.body:
                case.body["session_id"] = fuzzed["session_id"]
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in {h.lower() for h in credentials}}
    case.headers = {**headers, **credentials}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_generated_input_gets_a_server_error(fuzzed, method, path):
    operation = fuzzed["schema"][path][method]
    cases = st.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=FUZZ_MAX_EXAMPLES,
        derandomize=True,  # the same cases on every run: a failure here is never a fluke
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def fuzz(case):
        prepare(case, fuzzed)
        case.call_and_validate(checks=[not_a_server_error])

    fuzz()


# --- shapes the generator rarely reaches: found by hand, each a 4xx (it once was a 500) ---

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
HOSTILE = {
    "text part not a string": ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
    "image url not a string": (
        "chat",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]},
    ),
    "tool call function not an object": (
        "chat",
        {"messages": [{"role": "assistant", "tool_calls": [{"function": 5}]}]},
    ),
    "tool call name not a string": (
        "chat",
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": 5, "arguments": "{}"}}]}]},
    ),
    "tool name not a string": ("chat", {"tools": [{"type": "function", "function": {"name": 5}}]}),
    "tool parameters not an object": (
        "chat",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}], "tool_choice": "required"},
    ),
    "tool choice function not an object": (
        "chat",
        {"tools": [TOOL], "tool_choice": {"type": "function", "function": 5}},
    ),
    "streamed, tool parameters not an object": (
        "chat",
        {"stream": True, "tools": [{"type": "function", "function": {"name": "f", "parameters": "object"}}]},
    ),
    "plan change before year 1 in UTC": ("plan", {"plan": "pro", "effective_from": "0001-01-01T00:00:00+14:00"}),
    "plan change after year 9999 in UTC": ("plan", {"plan": "pro", "effective_from": "9999-12-31T23:59:59-12:00"}),
    "top-up expiring before year 1 in UTC": (
        "topups",
        {"meter": "tokens", "units": 5, "amount": "1", "expires_at": "0001-01-01T00:00:00+14:00"},
    ),
    "credit grant expiring after year 9999 in UTC": (
        "credit-grants",
        {"amount": "1", "expires_at": "9999-12-31T23:59:59-12:00"},
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_shapes_are_refused_with_422_and_change_nothing(client, tenants, name):
    target, body = HOSTILE[name]
    t = tenants.create("pro")
    rt = client.app.state.runtime
    written = rt.log.events_written
    if target == "chat":
        message = {"role": "user", "content": "hello"}
        body = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [message], **body}
        body["messages"] = [*body["messages"], message] if body["messages"][-1] is not message else body["messages"]
        r = client.post("/v1/chat/completions", json=body, headers=t["headers"])
    else:
        method = client.put if target == "plan" else client.post
        r = method(f"/admin/tenants/{t['tenant_id']}/{target}", json=body, headers=ADMIN_HEADERS)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert rt.log.events_written == written and rt.admission.open_holds() == 0
    assert client.get(f"/admin/tenants/{t['tenant_id']}", headers=ADMIN_HEADERS).json()["plan"] == "pro"


def test_a_tool_schema_the_simulated_model_cannot_sample_is_answered(client, tenants):
    """Beyond the shape checked at the edge, a caller's JSON Schema is not the model's to crash on."""
    t = tenants.create("pro")
    odd = {"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": 5, "b": []}}}}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "tools": [odd]}
    r = client.post("/v1/chat/completions", json={**body, "tool_choice": "required"}, headers=t["headers"])
    assert r.status_code == 200, r.text
    assert (
        r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"a": "sample", "b": "sample"}'
    )
