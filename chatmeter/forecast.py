"""Month-end usage forecasts: a damped-trend projection with an interval, and the naive run-rate baseline.

Pure functions on daily totals (index 0 = the billing month's first day), so they can be backtested on any
history and tested without the pipeline. `project_many` projects many series at once (the pipeline's every
tenant and meter, and every backtest point, in a few array operations); `project` is the same for one.
"""

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

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


@dataclass(frozen=True, slots=True)
class Projections:
    """Projection's fields, one array element per series."""

    used: np.ndarray
    expected: np.ndarray
    low: np.ndarray
    high: np.ndarray
    daily_rate: np.ndarray


def row_sums(a: np.ndarray) -> np.ndarray:
    """Sums along the last axis added left to right, as Python's sum adds: numpy's sum adds pairwise, which can
    differ in the last bit. Zeros (left or right of the values) change nothing."""
    if a.shape[-1] == 0:
        return np.zeros(a.shape[:-1])
    return np.add.accumulate(a, axis=-1)[..., -1]


def _positive(x: np.ndarray) -> np.ndarray:
    """max(0.0, x) element-wise, as Python's max picks."""
    return np.where(x > 0.0, x, 0.0)


def naive_run_rates(used: np.ndarray, elapsed_days: np.ndarray, days_in_month: np.ndarray) -> np.ndarray:
    """Used so far, scaled to the whole month: what a dashboard's run-rate shows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(elapsed_days > 0, used / elapsed_days * days_in_month, used)


def naive_run_rate(month_to_date: list[float], elapsed_days: float, days_in_month: float) -> float:
    used = row_sums(np.array([month_to_date], dtype=float).reshape(1, -1))
    return float(naive_run_rates(used, np.array([elapsed_days], dtype=float), np.array([days_in_month]))[0])


def project_many(
    history_tail: np.ndarray,
    history_days: np.ndarray,
    month_to_date: np.ndarray,
    elapsed_days: np.ndarray,
    days_in_month: np.ndarray,
    trailing: int = TRAILING_DAYS,
    damping: float = DAMPING,
) -> Projections:
    """Month-end usage: used so far plus the days left at the recent rate, with an 80% interval from the daily
    spread (sqrt of the days left; never below what is already used). The rate follows a linear trend fitted
    (least squares) to the trailing days when the trend is significant (|slope| > 3 standard errors), damped;
    otherwise it is the mean of the last 2 x trailing days.

    Per series (row): its history is every full day before now (it may reach into earlier months), oldest first;
    the current, partial day is in the month to date but not in the history. `history_tail` [n, 2 x trailing]
    holds each history's last days, ending at the right edge (what lies left of a history's start is ignored);
    `history_days` [n] its length in days; `month_to_date` [n, w] each month's days so far from the left edge,
    zeros after them. The arithmetic is that of the one-series formula step for step, so each result is the
    same float it would give.
    """
    longest = 2 * trailing
    tail = np.asarray(history_tail, dtype=float).reshape(-1, longest)
    length = np.asarray(history_days, dtype=np.int64)
    elapsed = np.asarray(elapsed_days, dtype=float)
    days = np.asarray(days_in_month, dtype=float)
    used = row_sums(np.asarray(month_to_date, dtype=float).reshape(len(tail), -1))
    left = _positive(days - elapsed)

    n = np.minimum(length, trailing)  # days in the trailing fit
    recent = tail[:, longest - trailing :]
    column = np.arange(trailing)
    valid = column >= (trailing - n)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # The fit: x = 0 .. n-1 over the last n days.
        x = (column - (trailing - n)[:, None]).astype(float)
        mx = (n - 1) / 2
        my = row_sums(np.where(valid, recent, 0.0)) / n
        dx = np.where(valid, x - mx[:, None], 0.0)
        sxx = row_sums(dx**2)
        fitted = row_sums(np.where(valid, dx * (recent - my[:, None]), 0.0)) / sxx
        residuals = recent - (my[:, None] + fitted[:, None] * dx)
        std_fit = np.sqrt(row_sums(np.where(valid, residuals * residuals, 0.0)) / (n - 2))
        trend = np.abs(fitted) > 3 * std_fit / np.sqrt(sxx)
        trend_slope = fitted * damping
        trend_level = my + trend_slope * (n - 1 - mx)  # the trend's value on the last full day
        # Noise around a level: the mean of a longer stretch estimates it best.
        longer = np.minimum(length, longest)
        long_mean = row_sums(np.where(np.arange(longest) >= (longest - longer)[:, None], tail, 0.0)) / longer
        no_history = np.where(elapsed > 0, used / elapsed, 0.0)
    short_max = np.where(valid, recent, -np.inf).max(axis=1)

    fit = n >= 3
    level = np.where(n == 0, no_history, np.where(~fit, my, np.where(trend, trend_level, long_mean)))
    slope = np.where(fit & trend, trend_slope, 0.0)
    std = np.where(n == 0, 0.0, np.where(~fit, short_max, std_fit))
    # The days left at the trend: level + slope * k for k in (0, left], never a negative rate.
    rate = _positive(level + slope * (left + 1) / 2)
    expected = used + rate * left
    spread = Z80 * std * np.sqrt(left)
    low = np.where(expected - spread > used, expected - spread, used)
    return Projections(used, expected, low, expected + spread, _positive(level))


def project(
    history: list[float],
    month_to_date: list[float],
    elapsed_days: float,
    days_in_month: float,
    trailing: int = TRAILING_DAYS,
    damping: float = DAMPING,
) -> Projection:
    """project_many for one series: `history` every full day before now, oldest first; `month_to_date` the
    billing month's days so far, the current one included."""
    tail = np.zeros((1, 2 * trailing))
    recent = history[-2 * trailing :]
    if recent:
        tail[0, tail.shape[1] - len(recent) :] = recent
    p = project_many(
        tail,
        np.array([len(history)]),
        np.array([month_to_date], dtype=float).reshape(1, -1),
        np.array([elapsed_days], dtype=float),
        np.array([days_in_month], dtype=float),
        trailing,
        damping,
    )
    return Projection(float(p.used[0]), float(p.expected[0]), float(p.low[0]), float(p.high[0]), float(p.daily_rate[0]))


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
