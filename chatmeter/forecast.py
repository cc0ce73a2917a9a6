"""Month-end usage forecasts: a damped-trend projection with an interval, and the naive run-rate baseline.

Pure functions on daily totals (index 0 = the billing month's first day), so they can be backtested on any
history and tested without the pipeline.
"""

import math
from dataclasses import dataclass
from decimal import Decimal

# Two-sided 80% interval of a normal distribution.
Z80 = 1.2816
TRAILING_DAYS = 14
# Half the fitted slope: a trend seen over two weeks rarely holds at full strength for the rest of the month.
DAMPING = 0.5


@dataclass(frozen=True, slots=True)
class Projection:
    used: float
    expected: float
    low: float
    high: float
    daily_rate: float


def naive_run_rate(month_to_date: list[float], elapsed_days: float, days_in_month: float) -> float:
    """Used so far, scaled to the whole month: what a dashboard's run-rate shows."""
    used = sum(month_to_date)
    if elapsed_days <= 0:
        return used
    return used / elapsed_days * days_in_month


def project(
    history: list[float],
    month_to_date: list[float],
    elapsed_days: float,
    days_in_month: float,
    trailing: int = TRAILING_DAYS,
    damping: float = DAMPING,
) -> Projection:
    """Month-end usage: used so far plus the days left at the recent rate, with an 80% interval from the daily
    spread (sqrt of the days left; never below what is already used). The rate follows a linear trend fitted
    (least squares) to the trailing days when the trend is significant (|slope| > 3 standard errors), damped;
    otherwise it is the mean of the last 2 x trailing days.

    `history` is every full day before now (it may reach into earlier months), oldest first; the current,
    partial day is in `month_to_date` but not in `history`.
    """
    used = sum(month_to_date)
    recent = history[-trailing:]
    left = max(0.0, days_in_month - elapsed_days)
    n = len(recent)
    if n == 0:
        level, slope, std = (used / elapsed_days if elapsed_days > 0 else 0.0), 0.0, 0.0
    elif n < 3:
        level, slope, std = sum(recent) / n, 0.0, max(recent)
    else:
        xs = range(n)
        mx, my = (n - 1) / 2, sum(recent) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        fitted = sum((x - mx) * (y - my) for x, y in zip(xs, recent, strict=True)) / sxx
        residuals = [y - (my + fitted * (x - mx)) for x, y in zip(xs, recent, strict=True)]
        std = math.sqrt(sum(r * r for r in residuals) / (n - 2))
        if abs(fitted) > 3 * std / math.sqrt(sxx):
            # A real trend: follow it, damped.
            slope = fitted * damping
            level = my + slope * (n - 1 - mx)  # the trend's value on the last full day
        else:
            # Noise around a level: the mean of a longer stretch estimates it best.
            longer = history[-2 * trailing :]
            slope, level = 0.0, sum(longer) / len(longer)
    # The days left at the trend: level + slope * k for k in (0, left], never a negative rate.
    rate = max(0.0, level + slope * (left + 1) / 2)
    expected = used + rate * left
    spread = Z80 * std * math.sqrt(left)
    return Projection(used, expected, max(used, expected - spread), expected + spread, max(0.0, level))


def days_until(limit: float | None, used: float, daily_rate: float) -> float | None:
    """Days until `used` reaches `limit` at the daily rate; 0 when already there, None when never."""
    if limit is None:
        return None
    if used >= limit:
        return 0.0
    if daily_rate <= 0:
        return None
    return (limit - used) / daily_rate


def ape(forecast: float, actual: float) -> float | None:
    """Absolute percentage error; None when the actual is zero."""
    if actual == 0:
        return None
    return abs(forecast - actual) / abs(actual)


def as_decimal(x: float) -> Decimal:
    return Decimal(str(round(x, 6)))
