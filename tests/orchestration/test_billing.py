"""The money arithmetic (chatmeter/billing.py) and forecasting helpers (chatmeter/forecast.py)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from chatmeter import billing
from chatmeter.catalog import SHIPPED_CATALOG, Overage, load_catalog
from chatmeter.forecast import days_until, naive_run_rate, project

D = Decimal


def test_round_cents_is_half_even():
    assert billing.round_cents(D("0.125")) == D("0.12")
    assert billing.round_cents(D("0.135")) == D("0.14")
    assert billing.round_cents(D("-0.125")) == D("-0.12")
    assert billing.round_cents(D("4.995")) == D("5.00")


@pytest.mark.parametrize(
    ("fee", "on_plan", "period", "expected"),
    [
        (D("9.99"), 15, 30, D("5.00")),  # 4.995 -> even cent 5.00
        (D("29.99"), 1252800, 2678400, D("14.03")),
        (D("0.25"), 1, 2, D("0.12")),  # 0.125 -> 0.12
        (D("49.99"), 30, 30, D("49.99")),
        (D("0"), 10, 30, D("0.00")),
    ],
)
def test_proration_by_seconds(fee, on_plan, period, expected):
    assert billing.prorated_fee(fee, on_plan, period) == expected


def test_charge_models():
    graduated = Overage(
        meter="tokens",
        charge_model="graduated",
        tiers=[{"up_to": 500000, "unit_price": "0.000004"}, {"unit_price": "0.000003", "flat_fee": "1"}],
    )
    assert billing.overage_amount(graduated, D(700000)) == D("2.000000") + D("0.600000") + 1
    assert billing.overage_amount(graduated, D(100)) == D("0.0004")
    volume = Overage(
        meter="tokens",
        charge_model="volume",
        tiers=[
            {"up_to": 1000000, "unit_price": "0.0000035"},
            {"up_to": 10000000, "unit_price": "0.000003"},
            {"unit_price": "0.0000025"},
        ],
    )
    assert billing.overage_amount(volume, D(1500000)) == D("4.5")
    assert billing.overage_amount(volume, D(1000000)) == D("3.5")
    package = Overage(meter="credits", charge_model="package", package_size=1000, package_price="8")
    assert billing.overage_amount(package, D(2001)) == 24
    assert billing.overage_amount(package, D(1000)) == 8
    per_unit = Overage(meter="credits", charge_model="per_unit", unit_price="0.01")
    assert billing.round_cents(billing.overage_amount(per_unit, D("123.5"))) == D("1.24")
    flat = Overage(meter="credits", charge_model="flat", flat_amount="5")
    assert billing.overage_amount(flat, D("0.000001")) == 5
    assert billing.overage_amount(flat, D(0)) == 0


def test_credit_allocation_priority_then_expiry():
    t = lambda m, d=1: datetime(2026, m, d, tzinfo=UTC)  # noqa: E731
    grants = [
        billing.Grant("a", D(25), t(1, 5), None, 0),
        billing.Grant("b", D(20), t(1, 5), None, 1),
        billing.Grant("c", D(40), t(2, 10), t(3, 15), 1),
    ]
    taken = billing.allocate_credits(grants, [(t(2), D(10)), (t(3), D(30)), (t(4), D(5))])
    assert taken == [{"a": D(10)}, {"a": D(15), "c": D(15)}, {"b": D(5)}]


def test_plan_covers_and_month_cost():
    catalog = load_catalog(SHIPPED_CATALOG)
    assert billing.plan_covers(catalog.plans["pro"], {"tokens": D(50000)})
    assert not billing.plan_covers(catalog.plans["pro"], {"tokens": D(50001)})
    assert not billing.plan_covers(catalog.plans["team"], {"tokens": D(1)}, {"tokens": D(60000)})
    cost = billing.plan_month_cost(catalog.plans["team"], {"tokens": D(1200000)}, catalog.margin, D(0))
    assert cost == D("29.99") + D("2.60")


def test_projection_and_run_rate():
    history = [100.0] * 20
    p = project(history, [100.0] * 10, 10, 30)
    assert p.expected == pytest.approx(3000.0)
    assert p.low == pytest.approx(3000.0) and p.high == pytest.approx(3000.0)  # no spread, no interval
    noisy = project([50.0, 150.0] * 10, [100.0] * 10, 10, 30)
    assert noisy.low < noisy.expected < noisy.high
    assert naive_run_rate([100.0] * 10, 10, 30) == pytest.approx(3000.0)
    assert days_until(1000, 400, 100) == 6
    assert days_until(1000, 1200, 100) == 0
    assert days_until(None, 1, 1) is None
    assert days_until(1000, 1, 0) is None


def test_projection_follows_a_significant_trend():
    history = [100.0 + 10 * i for i in range(30)]
    month_to_date = history[-10:]
    p = project(history, month_to_date, 10, 30)
    naive = naive_run_rate(month_to_date, 10, 30)
    # Growing usage: the trend projects more than the month-to-date run-rate, but damped below the full line.
    full_line = sum(month_to_date) + sum(100.0 + 10 * i for i in range(30, 50))
    assert naive < p.expected < full_line
