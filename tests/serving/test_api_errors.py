"""Bad input: each a clear 4xx in the error envelope, and nothing written to the usage log."""

import pytest

from tests.conftest import chat_body


def _envelope(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] and err["message"]
    if code is not None:
        assert err["code"] == code
    return err


@pytest.fixture
def written(client):
    rt = client.app.state.runtime
    start = rt.log.events_written
    return lambda: rt.log.events_written - start


def test_missing_and_wrong_keys_are_401(client, tenants, written):
    tenants.create("free")
    _envelope(client.post("/v1/chat/completions", json=chat_body()), 401, "missing_api_key")
    _envelope(
        client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer nope"}),
        401,
        "invalid_api_key",
    )
    _envelope(client.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Basic abc"}), 401)
    _envelope(client.get("/v1/usage", headers={"Authorization": "Bearer cm_live_forged"}), 401)
    assert written() == 0


def test_revoked_key_is_refused(client, tenants, admin_headers):
    t = tenants.create("free")
    keys = client.get(f"/admin/tenants/{t['tenant_id']}/keys", headers=admin_headers).json()["data"]
    r = client.delete(f"/admin/tenants/{t['tenant_id']}/keys/{keys[0]['key_id']}", headers=admin_headers)
    assert r.status_code == 200
    _envelope(client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"]), 401, "invalid_api_key")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[]", 422),
        (b'{"model": "gpt-4o-mini"}', 422),
        (b'{"model": "gpt-4o-mini", "messages": []}', 422),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}', 422),
        (b'{"model": "gpt-4o-mini", "messages": "hello"}', 422),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}', 422),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 422),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999999}', 422),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"}', 422),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 3}', 422),
        (b'{"model": "", "messages": [{"role": "user", "content": "x"}]}', 422),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "temperature": 9}', 422),
    ],
)
def test_malformed_requests(client, tenants, written, body, status):
    t = tenants.create("free")
    r = client.post("/v1/chat/completions", content=body, headers={**t["headers"], "Content-Type": "application/json"})
    _envelope(r, status)
    assert written() == 0


def test_unpriced_model_is_refused_before_any_call(client, tenants, written):
    t = tenants.create("free")
    err = _envelope(
        client.post("/v1/chat/completions", json={**chat_body(), "model": "my-private-llm"}, headers=t["headers"]),
        400,
        "model_not_priced",
    )
    assert "my-private-llm" in err["message"]
    assert written() == 0


def test_operator_catalog_can_price_a_model(tmp_path, settings, admin_headers):
    """An operator's catalog prices a self-hosted model; a reload puts it in force without a restart."""
    from fastapi.testclient import TestClient

    from chatmeter.catalog import SHIPPED_CATALOG
    from serving.app import create_app

    operator = tmp_path / "catalog.toml"
    operator.write_text(SHIPPED_CATALOG.read_text())
    settings.catalog_path = operator
    with TestClient(create_app(settings)) as client:
        t = client.post("/admin/tenants", json={"name": "A", "plan": "pro"}, headers=admin_headers).json()
        headers = {"Authorization": f"Bearer {t['api_key']}"}
        assert (
            client.post(
                "/v1/chat/completions", json={**chat_body(), "model": "my-private-llm"}, headers=headers
            ).status_code
            == 400
        )
        operator.write_text(
            SHIPPED_CATALOG.read_text().replace('version = "2026.1"', 'version = "2026.2"')
            + '\n[models."my-private-llm"]\ninput_mtok = "0.2"\noutput_mtok = "0.4"\n'
        )
        r = client.post("/admin/catalog/reload", headers=admin_headers)
        assert r.status_code == 200 and r.json()["version"] == "2026.2"
        r = client.post("/v1/chat/completions", json={**chat_body(), "model": "my-private-llm"}, headers=headers)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(("header", "limit"), [("Idempotency-Key", 255), ("x-conversation-id", 128)])
def test_overlong_optional_headers_are_422(client, tenants, written, header, limit):
    t = tenants.create("free")
    r = client.post("/v1/chat/completions", json=chat_body(), headers={**t["headers"], header: "k" * (limit + 1)})
    assert header in _envelope(r, 422, "invalid_request")["message"]
    assert written() == 0
    ok = client.post("/v1/chat/completions", json=chat_body(), headers={**t["headers"], header: "k" * limit})
    assert ok.status_code == 200 and written() == 1


def test_oversized_body_is_413(client, tenants, written, settings):
    t = tenants.create("free")
    huge = chat_body("x" * (settings.max_body_bytes + 10))
    _envelope(client.post("/v1/chat/completions", json=huge, headers=t["headers"]), 413, "request_too_large")
    assert written() == 0


def test_oversized_chunked_body_is_413(client, tenants, written, settings):
    t = tenants.create("free")

    def chunks():
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    r = client.post(
        "/v1/chat/completions", content=chunks(), headers={**t["headers"], "Content-Type": "application/json"}
    )
    _envelope(r, 413, "request_too_large")
    assert written() == 0


def test_unknown_route_and_method_use_the_envelope(client):
    _envelope(client.get("/v1/nothing-here"), 404)
    _envelope(client.get("/v1/chat/completions"), 405)


def test_bad_usage_query_is_422(client, tenants):
    t = tenants.create("free")
    _envelope(client.get("/v1/usage", params={"user": "u" * 500}, headers=t["headers"]), 422)
