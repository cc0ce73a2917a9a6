from decimal import Decimal

import pytest

from chatmeter.catalog import SHIPPED_CATALOG, CatalogError, CatalogStore, load_catalog, parse_catalog


def test_shipped_catalog_has_the_seed_tiers():
    c = load_catalog(SHIPPED_CATALOG)
    expected = {"free": (10_000, "0"), "pro": (50_000, "9.99"), "enterprise": (200_000, "49.99")}
    for plan_id, (tokens, fee) in expected.items():
        plan = c.plans[plan_id]
        assert plan.monthly_fee == Decimal(fee)
        limit = plan.month_limit("tokens")
        assert limit.included == limit.hard == tokens
    assert c.margin == Decimal("1.5")
    team = c.plans["team"]
    assert {(x.meter, x.window) for x in team.limits} >= {
        ("tokens", "day"),
        ("requests", "day"),
        ("embedding_tokens", "day"),
    }
    assert {o.charge_model for p in c.plans.values() for o in p.overage} == {
        "flat",
        "per_unit",
        "graduated",
        "volume",
        "package",
    }
    assert c.credits.for_event("chat", "gpt-4o") == Decimal(3)
    assert c.credits.for_event("chat", "gpt-4o-mini") == Decimal(1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('margin = "1.5"', 'margin = "0"'), "margin"),
        (('default_plan = "free"', 'default_plan = "gold"'), "default_plan"),
        (("included = 10000, hard = 10000", "included = 10000, hard = 5"), "hard limit"),
        (('charge_model = "per_unit", unit_price = "0.01"', 'charge_model = "per_unit"'), "unit_price"),
        (
            (
                'meter = "tokens", window = "month", included = 10000',
                'meter = "gold", window = "month", included = 10000',
            ),
            "meter",
        ),
        (('version = "2026.1"', 'version = "2026.1"\nsurprise = 1'), "surprise"),
    ],
)
def test_invalid_catalogs_say_why(change, message):
    text = SHIPPED_CATALOG.read_text()
    assert change[0] in text
    with pytest.raises(CatalogError) as info:
        parse_catalog(text.replace(change[0], change[1], 1))
    assert message in str(info.value)


def test_not_toml_is_refused():
    with pytest.raises(CatalogError, match="not valid TOML"):
        parse_catalog("[[[")


def test_store_keeps_the_old_catalog_when_the_new_is_bad(tmp_path):
    path = tmp_path / "catalog.toml"
    path.write_text(SHIPPED_CATALOG.read_text())
    store = CatalogStore(path, tmp_path / "archive")
    path.write_text("margin = ")
    with pytest.raises(CatalogError):
        store.reload()
    assert store.current.version == "2026.1"
    assert store.reload_if_changed() is False
    path.write_text(SHIPPED_CATALOG.read_text().replace("2026-01-01", "2026-06-01").replace('"2026.1"', '"2026.6"'))
    assert store.reload_if_changed() is True
    assert store.current.version == "2026.6"
    assert len(list((tmp_path / "archive").glob("*.toml"))) == 2
