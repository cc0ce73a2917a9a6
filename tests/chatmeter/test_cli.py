"""The `chatmeter` command's tenant and key management, against a data dir of its own."""

import json

import pytest
from click.testing import CliRunner

from chatmeter.cli import main


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATMETER_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_tenant_create_prints_the_contract_json(run):
    out = json.loads(run("tenant", "create", "--name", "Acme", "--plan", "pro").output)
    assert set(out) == {"tenant_id", "api_key", "widget_key"}
    assert out["api_key"].startswith("cm_live_") and out["widget_key"].startswith("cm_pub_")
    listed = json.loads(run("tenant", "list").output)
    assert listed[0]["tenant_id"] == out["tenant_id"] and listed[0]["plan"] == "pro"


def test_unknown_plan_is_a_clear_error(run):
    result = run("tenant", "create", "--name", "Acme", "--plan", "gold", ok=False)
    assert result.exit_code != 0 and "unknown plan" in result.output


def test_key_create_list_revoke(run):
    tenant = json.loads(run("tenant", "create", "--name", "Acme").output)
    key = json.loads(run("key", "create", "--tenant", tenant["tenant_id"], "--name", "ci").output)
    keys = json.loads(run("key", "list", "--tenant", tenant["tenant_id"]).output)
    assert {k["name"] for k in keys} == {"default", "ci"}
    assert all("api_key" not in k for k in keys)
    run("key", "revoke", "--tenant", tenant["tenant_id"], "--key-id", key["key_id"])
    again = run("key", "revoke", "--tenant", tenant["tenant_id"], "--key-id", key["key_id"], ok=False)
    assert again.exit_code != 0
    assert run("key", "list", "--tenant", "tn_nobody", ok=False).exit_code != 0


def test_topup_and_plan_change(run):
    tenant = json.loads(run("tenant", "create", "--name", "Acme").output)
    topup = json.loads(run("topup", "--tenant", tenant["tenant_id"], "--pack", "tokens_10k").output)
    assert topup["units"] == 10000 and topup["amount"] == "2.99"
    assert run("topup", "--tenant", tenant["tenant_id"], "--units", "5", "--amount", "abc", ok=False).exit_code != 0
    changed = json.loads(run("tenant", "plan", "--tenant", tenant["tenant_id"], "--plan", "enterprise").output)
    assert changed["plan"] == "enterprise"


def test_catalog_check(run, tmp_path):
    from chatmeter.catalog import SHIPPED_CATALOG

    assert json.loads(run("catalog", "check", str(SHIPPED_CATALOG)).output)["version"]
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "x"')
    result = run("catalog", "check", str(bad), ok=False)
    assert result.exit_code != 0 and "effective_from" in result.output
