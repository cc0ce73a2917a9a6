from datetime import UTC, datetime

import pytest

from chatmeter.windows import billing_month, day_window, window_at


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_day_window_is_the_utc_day():
    w = day_window(at(2026, 3, 5, 23, 59, 59))
    assert (w.start, w.end) == (at(2026, 3, 5), at(2026, 3, 6))


@pytest.mark.parametrize(
    ("now", "anchor", "start", "end"),
    [
        (at(2026, 3, 20, 12), 15, at(2026, 3, 15), at(2026, 4, 15)),
        (at(2026, 3, 10, 12), 15, at(2026, 2, 15), at(2026, 3, 15)),
        (at(2026, 3, 15), 15, at(2026, 3, 15), at(2026, 4, 15)),  # the reset instant opens the new month
        (at(2026, 2, 28, 12), 31, at(2026, 2, 28), at(2026, 3, 31)),  # short month: its last day
        (at(2026, 2, 27, 12), 31, at(2026, 1, 31), at(2026, 2, 28)),
        (at(2026, 12, 31, 23), 31, at(2026, 12, 31), at(2027, 1, 31)),
        (at(2027, 1, 1), 1, at(2027, 1, 1), at(2027, 2, 1)),
        (at(2028, 2, 29, 5), 29, at(2028, 2, 29), at(2028, 3, 29)),  # leap day
        (at(2028, 2, 29, 5), 30, at(2028, 2, 29), at(2028, 3, 30)),
    ],
)
def test_billing_month_from_the_anchor_day(now, anchor, start, end):
    w = billing_month(now, anchor)
    assert (w.start, w.end) == (start, end)
    assert w.start <= now < w.end


def test_consecutive_months_tile_time_without_gaps():
    anchor = 31
    w = billing_month(at(2026, 1, 31), anchor)
    for _ in range(24):
        nxt = billing_month(w.end, anchor)
        assert nxt.start == w.end
        w = nxt


def test_window_at_rejects_unknown_kinds():
    with pytest.raises(ValueError):
        window_at("week", at(2026, 1, 1), 1)


def test_ids_are_uuid7_unique_and_time_ordered():
    import uuid

    from chatmeter.ids import uuid7

    ids = [uuid7() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:100])
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the millisecond prefix never goes back
