"""Limit windows roll over by time, never by an event.

The day window is the UTC day. The billing month runs from 00:00 UTC on the tenant's anchor day to the same
day of the next month, or that month's last day when it is shorter.
"""

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

WINDOWS = ("day", "month")


@dataclass(frozen=True, slots=True)
class Window:
    kind: str
    start: datetime
    end: datetime

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
    start = _midnight(at.astimezone(UTC).date())
    return Window("day", start, start + timedelta(days=1))


def billing_month(at: datetime, anchor_day: int) -> Window:
    """The billing month containing `at` for a tenant whose plan started on day `anchor_day`."""
    at = at.astimezone(UTC)
    year, month = at.year, at.month
    start = anchored_day(year, month, anchor_day)
    if at.date() < start:
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
