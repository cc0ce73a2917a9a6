"""Money arithmetic for invoices, in Decimal only. The dbt models compute the same in SQL
(dbt_project/macros/money.sql, models/intermediate/int_invoice_charges.sql); the rules:

- Each invoice line's amount is rounded once, half-even, to the cent; an invoice's total is the sum of its
  lines.
- Proration is by seconds: a plan segment of a billing month costs `monthly_fee * seconds on the plan /
  seconds in the billing month`, rounded once.
- Overage charge models apply to the overage quantity `q = max(0, usage - included)`, where `included` is
  the plan's monthly tenant-scope limit's `included` for that meter (0 when it has none):
  flat: `flat_amount` when q > 0; per_unit: `q * unit_price`; package: `ceil(q / package_size) *
  package_price`; graduated: each tier prices the units of q that fall in it (tier bounds count overage
  units), plus the tier's flat fee when any unit falls in it; volume: all of q at the price of the tier q
  falls in (the first whose `up_to >= q`), plus that tier's flat fee.
- cost_plus plans bill the provider cost times the catalog's margin.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from chatmeter.catalog import Overage, Plan

CENT = Decimal("0.01")
ZERO = Decimal(0)


def round_cents(amount: Decimal) -> Decimal:
    """Half-even to the cent: the one rounding of each invoice line."""
    return Decimal(amount).quantize(CENT, rounding=ROUND_HALF_EVEN)


def prorated_fee(monthly_fee: Decimal, seconds_on_plan: int, seconds_in_period: int) -> Decimal:
    """The plan fee for the part of a billing month spent on the plan, by seconds, rounded once."""
    if seconds_in_period <= 0:
        raise ValueError("a billing period lasts more than zero seconds")
    exact = Decimal(monthly_fee) * seconds_on_plan / seconds_in_period
    # Decimal division is exact to 28 digits; quantize from the exact fraction to avoid double rounding.
    numerator = Decimal(monthly_fee) * 100 * seconds_on_plan
    cents, remainder = divmod(numerator, seconds_in_period)
    twice = remainder * 2
    if twice > seconds_in_period or (twice == seconds_in_period and cents % 2 == 1):
        cents += 1
    result = (cents * CENT).quantize(CENT)
    assert abs(result - exact) <= CENT  # a guard on the arithmetic above, never hit
    return result


def overage_quantity(usage: Decimal, included: Decimal) -> Decimal:
    return max(ZERO, Decimal(usage) - Decimal(included))


def overage_amount(overage: Overage, quantity: Decimal) -> Decimal:
    """The unrounded charge for `quantity` overage units under the overage's charge model."""
    q = Decimal(quantity)
    if q <= 0:
        return ZERO
    model = overage.charge_model
    if model == "flat":
        return Decimal(overage.flat_amount)
    if model == "per_unit":
        return q * overage.unit_price
    if model == "package":
        packages = (q / overage.package_size).to_integral_value(rounding=ROUND_CEILING)
        return packages * overage.package_price
    if model == "graduated":
        total, lower = ZERO, ZERO
        for tier in overage.tiers:
            upper = q if tier.up_to is None else min(q, tier.up_to)
            units = max(ZERO, upper - lower)
            if units > 0:
                total += units * tier.unit_price + tier.flat_fee
            if tier.up_to is None or q <= tier.up_to:
                break
            lower = tier.up_to
        return total
    if model == "volume":
        tier = next(t for t in overage.tiers if t.up_to is None or q <= t.up_to)
        return q * tier.unit_price + tier.flat_fee
    raise ValueError(f"unknown charge model {model!r}")


def plan_usage_charge(plan: Plan, usage: dict[str, Decimal], margin: Decimal, provider_cost: Decimal) -> Decimal:
    """Unrounded usage charges of a plan for a month's usage: overage per meter, or cost-plus."""
    total = ZERO
    if plan.pricing == "cost_plus":
        total += Decimal(provider_cost) * margin
    for overage in plan.overage:
        if overage.window != "month":
            continue
        limit = plan.month_limit(overage.meter)
        included = limit.included if limit else ZERO
        total += overage_amount(overage, overage_quantity(usage.get(overage.meter, ZERO), included))
    return total


def plan_month_cost(plan: Plan, usage: dict[str, Decimal], margin: Decimal, provider_cost: Decimal) -> Decimal:
    """What a full billing month on `plan` would cost for this usage, each part rounded as an invoice would."""
    total = round_cents(plan.monthly_fee)
    if plan.pricing == "cost_plus":
        total += round_cents(Decimal(provider_cost) * margin)
    for overage in plan.overage:
        if overage.window != "month":
            continue
        limit = plan.month_limit(overage.meter)
        included = limit.included if limit else ZERO
        total += round_cents(overage_amount(overage, overage_quantity(usage.get(overage.meter, ZERO), included)))
    return total


def plan_covers(plan: Plan, usage: dict[str, Decimal], peak_day: dict[str, Decimal] | None = None) -> bool:
    """True when no hard tenant limit of the plan would refuse this usage: monthly limits against the month's
    usage, daily limits against the busiest day's."""
    for limit in plan.limits:
        if limit.scope != "tenant" or limit.hard is None:
            continue
        source = usage if limit.window == "month" else (peak_day or {})
        if source.get(limit.meter, ZERO) > limit.hard:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Grant:
    grant_id: str
    amount: Decimal
    granted_at: datetime
    expires_at: datetime | None
    priority: int


def grant_order(grant: Grant) -> tuple:
    """Lower priority number first, then the earliest expiry (never-expiring last), then the oldest."""
    return (
        grant.priority,
        grant.expires_at is None,
        grant.expires_at or grant.granted_at,
        grant.granted_at,
        grant.grant_id,
    )


def grant_usable(grant: Grant, period_end: datetime) -> bool:
    """A grant pays invoices of periods ending after it was granted and no later than its expiry."""
    return grant.granted_at < period_end and (grant.expires_at is None or grant.expires_at >= period_end)


def allocate_credits(grants: Iterable[Grant], invoices: Sequence[tuple[datetime, Decimal]]) -> list[dict[str, Decimal]]:
    """Consume credit grants over a tenant's invoices in period order.

    `invoices` is (period_end, subtotal) oldest first; returns, per invoice, {grant_id: amount consumed}.
    """
    ordered = sorted(grants, key=grant_order)
    remaining = {g.grant_id: Decimal(g.amount) for g in ordered}
    out = []
    for period_end, subtotal in invoices:
        due = max(ZERO, Decimal(subtotal))
        taken: dict[str, Decimal] = {}
        for grant in ordered:
            if due <= 0:
                break
            if not grant_usable(grant, period_end) or remaining[grant.grant_id] <= 0:
                continue
            take = min(due, remaining[grant.grant_id])
            remaining[grant.grant_id] -= take
            due -= take
            taken[grant.grant_id] = take
        out.append(taken)
    return out
