"""The operator's API, and isolation between tenants."""

from tests.conftest import chat_body


def test_admin_needs_the_admin_token(client, tenants):
    t = tenants.create("free")
    assert client.get("/admin/tenants").status_code == 401
    r = client.get("/admin/tenants", headers=t["headers"])  # a tenant key is not an admin token
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_admin_token"


def test_create_tenant_shows_secrets_once_and_stores_the_key_hashed(client, tenants, admin_headers):
    t = tenants.create("pro", "Globex")
    assert t["api_key"].startswith("cm_live_") and t["widget_key"].startswith("cm_pub_")
    keys = client.get(f"/admin/tenants/{t['tenant_id']}/keys", headers=admin_headers).json()["data"]
    assert len(keys) == 1 and "api_key" not in keys[0]
    assert t["api_key"].startswith(keys[0]["prefix"])
    rt = client.app.state.runtime
    with rt.store.engine.connect() as con:
        stored = [row[0] for row in con.exec_driver_sql("select key_hash from api_keys")]
    assert t["api_key"] not in stored
    assert all(len(h) == 64 for h in stored)


def test_unknown_plan_is_refused(client, admin_headers):
    r = client.post("/admin/tenants", json={"name": "X", "plan": "platinum"}, headers=admin_headers)
    assert r.status_code == 422
    assert "free" in r.json()["error"]["message"]


def test_key_lifecycle(client, tenants, admin_headers):
    t = tenants.create("free")
    r = client.post(f"/admin/tenants/{t['tenant_id']}/keys", json={"name": "backend"}, headers=admin_headers)
    assert r.status_code == 201
    new = r.json()
    headers = {"Authorization": f"Bearer {new['api_key']}"}
    assert client.post("/v1/chat/completions", json=chat_body(), headers=headers).status_code == 200
    assert (
        client.delete(f"/admin/tenants/{t['tenant_id']}/keys/{new['key_id']}", headers=admin_headers).status_code == 200
    )
    assert client.post("/v1/chat/completions", json=chat_body(), headers=headers).status_code == 401
    assert (
        client.delete(f"/admin/tenants/{t['tenant_id']}/keys/{new['key_id']}", headers=admin_headers).status_code == 404
    )


def test_another_tenants_ids_are_404(client, tenants, admin_headers):
    a, b = tenants.create("free", "A"), tenants.create("free", "B")
    b_key = client.get(f"/admin/tenants/{b['tenant_id']}/keys", headers=admin_headers).json()["data"][0]["key_id"]
    r = client.delete(f"/admin/tenants/{a['tenant_id']}/keys/{b_key}", headers=admin_headers)
    assert r.status_code == 404
    assert client.post("/v1/chat/completions", json=chat_body(), headers=b["headers"]).status_code == 200
    assert client.get("/admin/tenants/tn_missing", headers=admin_headers).status_code == 404


def test_plan_change_takes_effect_at_once(client, tenants, admin_headers):
    t = tenants.create("free")
    r = client.put(f"/admin/tenants/{t['tenant_id']}/plan", json={"plan": "enterprise"}, headers=admin_headers)
    assert r.status_code == 200
    state = client.get("/v1/usage", headers=t["headers"]).json()
    assert state["subscriptionTier"] == "enterprise" and state["monthlyLimit"] == 200000
    history = client.get(f"/admin/tenants/{t['tenant_id']}/plan-assignments", headers=admin_headers).json()["data"]
    assert [h["plan"] for h in history] == ["free", "enterprise"]


def test_topup_raises_the_monthly_limit(client, tenants, admin_headers):
    t = tenants.create("free")
    r = client.post(f"/admin/tenants/{t['tenant_id']}/topups", json={"pack": "tokens_10k"}, headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["units"] == 10000 and r.json()["amount"] == "2.99"
    assert client.get("/v1/usage", headers=t["headers"]).json()["monthlyLimit"] == 20000
    bad = client.post(f"/admin/tenants/{t['tenant_id']}/topups", json={"pack": "nope"}, headers=admin_headers)
    assert bad.status_code == 422


def test_suspended_tenant_is_refused_with_the_reason(client, tenants, admin_headers):
    t = tenants.create("free")
    client.patch(f"/admin/tenants/{t['tenant_id']}", json={"status": "suspended"}, headers=admin_headers)
    r = client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_suspended"
    rt = client.app.state.runtime
    rt.store.update_tenant(t["tenant_id"], status="suspended", suspended_reason="payment_required")
    rt.forget_tenant(t["tenant_id"])
    r = client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"])
    assert r.status_code == 402 and r.json()["error"]["type"] == "payment_required"
    client.patch(f"/admin/tenants/{t['tenant_id']}", json={"status": "active"}, headers=admin_headers)
    assert client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"]).status_code == 200


def test_invalid_catalog_is_refused_and_the_old_stays(tmp_path, settings, admin_headers):
    from fastapi.testclient import TestClient

    from chatmeter.catalog import SHIPPED_CATALOG
    from serving.app import create_app

    operator = tmp_path / "catalog.toml"
    operator.write_text(SHIPPED_CATALOG.read_text())
    settings.catalog_path = operator
    with TestClient(create_app(settings)) as client:
        operator.write_text(SHIPPED_CATALOG.read_text().replace('margin = "1.5"', 'margin = "-1"'))
        r = client.post("/admin/catalog/reload", headers=admin_headers)
        assert r.status_code == 422
        assert "margin" in r.json()["error"]["message"]
        assert client.get("/admin/catalog", headers=admin_headers).json()["margin"] == "1.5"
        operator.write_text("this is [not toml")
        assert client.post("/admin/catalog/reload", headers=admin_headers).status_code == 422


def test_catalog_file_change_reloads_without_restart(tmp_path, settings, admin_headers):
    import time

    from fastapi.testclient import TestClient

    from chatmeter.catalog import SHIPPED_CATALOG
    from serving.app import create_app

    operator = tmp_path / "catalog.toml"
    operator.write_text(SHIPPED_CATALOG.read_text())
    settings.catalog_path = operator
    with TestClient(create_app(settings)) as client:
        operator.write_text(SHIPPED_CATALOG.read_text().replace('version = "2026.1"', 'version = "2026.9"'))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.get("/healthz").json()["catalog"] != "2026.9":
            time.sleep(0.05)
        assert client.get("/healthz").json()["catalog"] == "2026.9"
        archived = list(settings.catalog_dir.glob("*.toml"))
        assert len(archived) == 2  # both versions kept for billing past periods


def test_usage_export_csv(client, tenants, admin_headers):
    import csv
    import io
    import time

    a, b = tenants.create("free", "A"), tenants.create("free", "B")
    for t in (a, a, b):
        assert client.post("/v1/chat/completions", json=chat_body(), headers=t["headers"]).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # events reach Parquet when the log rolls (every 0.2 s here)
        r = client.get("/admin/usage/export.csv", params={"tenant_id": a["tenant_id"]}, headers=admin_headers)
        rows = list(csv.DictReader(io.StringIO(r.text)))
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert len(rows) == 2 and {row["tenant_id"] for row in rows} == {a["tenant_id"]}
    assert (
        client.get(
            "/admin/usage/export.csv", params={"start": "2026-02-01", "end": "2026-01-01"}, headers=admin_headers
        ).status_code
        == 400
    )
