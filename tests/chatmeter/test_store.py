from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from chatmeter.store import Store, hash_secret


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'meta.db'}")


def test_keys_are_found_by_secret_and_stored_hashed(store):
    tenant, secret, widget = store.create_tenant("Acme", "free")
    key = store.find_api_key(secret)
    assert key is not None and key.tenant_id == tenant.tenant_id
    with store.engine.connect() as con:
        assert con.exec_driver_sql("select key_hash from api_keys").scalar() == hash_secret(secret)
    assert store.find_api_key(secret + "x") is None
    assert store.revoke_api_key(tenant.tenant_id, key.key_id)
    assert store.find_api_key(secret) is None
    assert store.find_widget_key(widget.key).allows("https://any.example")


def test_plan_in_force_follows_effective_dates(store):
    start = datetime(2026, 1, 10, tzinfo=UTC)
    tenant, _, _ = store.create_tenant("Acme", "free", at=start)
    assert tenant.anchor_day == 10
    store.assign_plan(tenant.tenant_id, "pro", start + timedelta(days=15))
    assert store.plan_at(tenant.tenant_id, start + timedelta(days=1)) == "free"
    assert store.plan_at(tenant.tenant_id, start + timedelta(days=20)) == "pro"
    assert store.plan_at(tenant.tenant_id, start - timedelta(days=1)) is None


def test_money_round_trips_exactly(store):
    tenant, _, _ = store.create_tenant("Acme", "free")
    store.add_topup(tenant.tenant_id, "tokens", 10_000, Decimal("2.99"))
    store.add_credit_grant(tenant.tenant_id, Decimal("0.1") + Decimal("0.2"))
    assert store.topups(tenant.tenant_id)[0].amount == Decimal("2.99")
    assert store.credit_grants(tenant.tenant_id)[0].amount == Decimal("0.3")


def test_naive_datetimes_are_refused(store):
    tenant, _, _ = store.create_tenant("Acme", "free")
    with pytest.raises(Exception, match="naive"):
        store.assign_plan(tenant.tenant_id, "pro", datetime(2026, 1, 1))
