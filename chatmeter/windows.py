"""Limit windows roll over by time, never by an event.

The day window is the UTC day. The billing month runs from 00:00 UTC on the tenant's anchor day to the same
day of the next month, or that month's last day when it is shorter.
"""

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Window:
    kind: str
    start: datetime
    end: datetime
    start_epoch: int = field(init=False, repr=False, compare=False)  # Unix seconds: how counters key a window

    def __post_init__(self):
        object.__setattr__(self, "start_epoch", int(self.start.timestamp()))

    @property
    def seconds_to_reset(self) -> int:
        return max(0, int((self.end - utcnow()).total_seconds() + 0.999))


def utcnow() -> datetime:
    return datetime.now(UTC)


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def anchored_day(year: int, month: int, anchor_day: int) -> date:
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def day_window(at: datetime) -> Window:
    return _day_window(at.astimezone(UTC).date())


def billing_month(at: datetime, anchor_day: int) -> Window:
    """The billing month containing `at` for a tenant whose plan started on day `anchor_day`."""
    return _billing_month(at.astimezone(UTC).date(), anchor_day)


# Windows depend only on the UTC date (and anchor): cached, since every request asks for both.
@lru_cache(maxsize=1024)
def _day_window(day: date) -> Window:
    start = _midnight(day)
    return Window("day", start, start + timedelta(days=1))


@lru_cache(maxsize=65536)
def _billing_month(day: date, anchor_day: int) -> Window:
    year, month = day.year, day.month
    start = anchored_day(year, month, anchor_day)
    if day < start:
        year, month = _add_months(year, month, -1)
        start = anchored_day(year, month, anchor_day)
    ny, nm = _add_months(year, month, 1)
    return Window("month", _midnight(start), _midnight(anchored_day(ny, nm, anchor_day)))


def window_at(kind: str, at: datetime, anchor_day: int) -> Window:
    if kind == "day":
        return day_window(at)
    if kind == "month":
        return billing_month(at, anchor_day)
    raise ValueError(f"unknown window {kind!r}")
