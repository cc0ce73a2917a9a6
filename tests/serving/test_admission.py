"""Admission arithmetic: holds, clamping, refusal, expiry, snapshot swaps. Property-tested: for any
interleaving, used never passes the hard limit and the counters equal the log."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatmeter.catalog import METERS, SHIPPED_CATALOG, load_catalog
from chatmeter.metering import Usage, quantities
from serving.admission import Admission, Hold, Refusal, Subject, _window_keys, contributions

CATALOG = load_catalog(SHIPPED_CATALOG)
NOW = datetime(2026, 5, 20, 12, tzinfo=UTC)
SUBJECT = Subject("tn_1", "key_1", "alice")
ANCHOR = 3


def rules(adm: Admission, plan: str = "free", topups=None):
    return adm.rules(CATALOG, CATALOG.plans[plan], SUBJECT, ANCHOR, NOW, topups)


def settle(adm: Admission, hold: Hold, seq: int, usage: Usage, writer: str = "w") -> None:
    adm.release(hold)
    amounts = quantities("chat", "ok", usage, Decimal(1))
    adm.record(writer, seq, contributions(SUBJECT, ANCHOR, NOW, amounts))


def month_key(adm: Admission):
    return rules(adm)[0].key


def test_hold_then_settle_to_actual():
    adm = Admission()
    hold = adm.admit(rules(adm), input_tokens=100, max_tokens=500, credits=Decimal(1))
    assert isinstance(hold, Hold) and not hold.clamped
    key = month_key(adm)
    assert adm.reserved(key) == 600
    settle(adm, hold, 1, Usage(input_tokens=100, output_tokens=42))
    assert adm.reserved(key) == 0 and adm.used(key) == 142


def test_clamp_when_the_input_fits_refuse_when_it_does_not():
    adm = Admission()
    key = month_key(adm)
    adm.baseline = {key: 9_000}
    hold = adm.admit(rules(adm), input_tokens=400, max_tokens=5000, credits=Decimal(0))
    assert isinstance(hold, Hold) and hold.clamped and hold.max_tokens == 600
    refusal = adm.admit(rules(adm), input_tokens=1, max_tokens=10, credits=Decimal(0))
    assert isinstance(refusal, Refusal) and refusal.code == "tokens_month_limit"
    adm.release(hold)
    assert isinstance(adm.admit(rules(adm), input_tokens=999, max_tokens=10, credits=Decimal(0)), Hold)
    assert isinstance(adm.admit(rules(adm), input_tokens=1000, max_tokens=10, credits=Decimal(0)), Refusal)


def test_topups_raise_the_monthly_limit():
    adm = Admission()
    adm.baseline = {month_key(adm): 10_000}
    assert isinstance(adm.admit(rules(adm), 10, 10, Decimal(0)), Refusal)
    assert isinstance(adm.admit(rules(adm, topups={"tokens": 100}), 10, 10, Decimal(0)), Hold)


def test_expired_holds_are_released():
    adm = Admission(hold_ttl_s=10)
    hold = adm.admit(rules(adm), 100, 100, Decimal(0))
    key = month_key(adm)
    assert adm.expire(now=hold.expires_at - 1) == 0 and adm.reserved(key) == 200
    assert adm.expire(now=hold.expires_at) == 1 and adm.reserved(key) == 0
    adm.release(hold)  # a late release of an expired hold changes nothing
    assert adm.reserved(key) == 0


def test_snapshot_folds_live_events_at_or_below_its_watermark():
    adm = Admission()
    key = month_key(adm)
    for seq in (1, 2, 3):
        settle(adm, adm.admit(rules(adm), 10, 10, Decimal(0)), seq, Usage(input_tokens=10, output_tokens=5))
    assert adm.used(key) == 45
    dropped = adm.apply_snapshot("s1", {key: 30}, {"w": 2})
    assert dropped == 2 and adm.used(key) == 45 and adm.retained_events() == 1
    # An event the snapshot already counts is not counted again when it settles late.
    adm.record("w", 2, contributions(SUBJECT, ANCHOR, NOW, {"tokens": 15}))
    assert adm.used(key) == 45
    # A snapshot going back in time is refused.
    with pytest.raises(ValueError, match="back in time"):
        adm.apply_snapshot("old", {key: 0}, {"w": 1})
    assert adm.snapshot_id == "s1" and adm.used(key) == 45


def test_an_end_user_the_snapshot_did_not_count_is_bounded_by_the_tenant():
    """The snapshot counts end users only where the plan limits them; a tenant that moved to such a plan (team:
    10,000 tokens a day per end user) since has no end-user counts in it. Until a snapshot counts them, the
    tenant's count stands in for each end user's: never below what the end user used, so never an overshoot."""
    adm = Admission()
    team = rules(adm, "team")
    user_day = next(r for r in team if r.limit.scope == "end_user").key
    tenant_day = next(r for r in team if r.limit.scope == "tenant" and r.key[3:5] == ("tokens", "day")).key
    adm.apply_snapshot("s1", {tenant_day: 9_500}, {"w": 1}, end_users_uncounted=frozenset({"tn_1"}))
    assert adm.used(user_day) == 9_500
    hold = adm.admit(team, input_tokens=100, max_tokens=1000, credits=Decimal(0))
    assert isinstance(hold, Hold) and hold.max_tokens == 400  # clamped to 10,000 - 9,500 - 100
    assert isinstance(adm.admit(team, input_tokens=1, max_tokens=10, credits=Decimal(0)), Refusal)
    # Once a snapshot counts the tenant's end users, their own counts apply.
    adm.release(hold)
    adm.apply_snapshot("s2", {tenant_day: 9_500, user_day: 200}, {"w": 2})
    assert adm.used(user_day) == 200
    hold = adm.admit(team, input_tokens=100, max_tokens=1000, credits=Decimal(0))
    assert isinstance(hold, Hold) and not hold.clamped


@st.composite
def operations(draw):
    return draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("admit"), st.integers(1, 3000), st.integers(1, 3000)),
                st.tuples(st.just("settle"), st.integers(0, 50), st.floats(0, 1)),
                st.tuples(st.just("release"), st.integers(0, 50)),
                st.tuples(st.just("expire"), st.integers(0, 50)),
                st.tuples(st.just("snapshot"), st.floats(0, 1)),
            ),
            max_size=80,
        )
    )


@settings(max_examples=300, deadline=None)
@given(operations())
def test_any_interleaving_stays_within_the_limit_and_equals_the_log(ops):
    clock = [0.0]
    adm = Admission(hold_ttl_s=1000, clock=lambda: clock[0])
    key = month_key(adm)
    limit = 10_000
    open_holds: list[tuple[Hold, int]] = []
    log: list[tuple[int, int]] = []  # (seq, tokens) of every settled event
    seq = 0
    for op in ops:
        if op[0] == "admit":
            result = adm.admit(rules(adm), op[1], op[2], Decimal(0))
            if isinstance(result, Hold):
                assert result.max_tokens >= 1
                open_holds.append((result, op[1]))
        elif op[0] == "settle" and open_holds:
            hold, input_tokens = open_holds.pop(op[1] % len(open_holds))
            if hold.hold_id not in adm._holds:
                continue  # it expired: the call is over
            output = int(hold.max_tokens * op[2])
            seq += 1
            settle(adm, hold, seq, Usage(input_tokens=input_tokens, output_tokens=output))
            log.append((seq, input_tokens + output))
        elif op[0] == "release" and open_holds:
            adm.release(open_holds.pop(op[1] % len(open_holds))[0])
        elif op[0] == "expire":
            clock[0] += op[1] * 100
            adm.expire()
        elif op[0] == "snapshot" and log:
            mark = log[int(op[1] * (len(log) - 1))][0]
            if mark >= adm.watermark.get("w", 0):
                adm.apply_snapshot(f"s{mark}", {key: sum(t for s, t in log if s <= mark)}, {"w": mark})
        assert adm.used(key) + adm.reserved(key) <= limit
        assert adm.used(key) == sum(t for _, t in log)
    for hold, _ in open_holds:
        adm.release(hold)
    assert adm.reserved(key) == 0


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 4),
    st.lists(
        st.one_of(
            st.tuples(st.just("event"), st.integers(0, 4), st.integers(0, 500)),
            st.tuples(st.just("snapshot"), st.floats(0, 1)),
        ),
        max_size=60,
    ),
)
def test_folded_events_leave_the_counters_equal_to_the_log(max_retained, ops):
    """With at most a few live events kept one by one and the older folded, any snapshot (its watermark among the
    folded ones or not, the folded ones re-read from the log when needed) leaves every window equal to the log."""
    adm = Admission(max_retained=max_retained)
    log: dict[int, tuple] = {}  # seq -> (seq, *Counted), as the log gives an event back
    for op in ops:
        if op[0] == "event":
            seq = len(log) + 1
            subject = Subject("tn_1", "key_1", f"user{op[1]}")
            log[seq] = (seq, *contributions(subject, ANCHOR, NOW, {"tokens": op[2], "requests": 1}))
            adm.record("w", seq, log[seq][1:])
        elif log:
            mark = max(adm.watermark.get("w", 0), int(op[1] * len(log)))
            reread = {
                writer: [log[s] for s in range(after + 1, upto + 1)]
                for writer, (after, upto, _) in adm.rereads({"w": mark}).items()
            }
            adm.apply_snapshot(f"s{mark}", {}, {"w": mark}, reread=reread)
        assert adm.retained_events() <= max_retained
        expected: dict[tuple, list[int]] = {}
        for event in log.values():
            if event[0] > adm.watermark.get("w", 0):
                for window in _window_keys(*event[1:6]):
                    counts = expected.setdefault(window, [0] * len(METERS))
                    for i, amount in enumerate(event[6:]):
                        counts[i] += amount
        assert adm.live == {window: counts for window, counts in expected.items() if any(counts)}


def test_memory_is_bounded_while_no_snapshot_comes():
    """A pipeline that stops publishing must not let the counters grow with every event: past max_retained, the
    oldest are summed per window. A snapshot falling among them needs them re-read, and is refused without."""
    adm = Admission(max_retained=100)
    key = month_key(adm)
    users = [Subject("tn_1", "key_1", f"user{i % 5}") for i in range(1000)]
    events = {}
    for seq, subject in enumerate(users, start=1):
        events[seq] = (seq, *contributions(subject, ANCHOR, NOW, {"tokens": 10, "requests": 1}))
        adm.record("w", seq, events[seq][1:])
    assert adm.retained_events() <= 100
    assert adm.folded_windows() == 5  # one sum per end user's (day, month): they share their window starts
    assert adm.used(key) == 10_000
    with pytest.raises(ValueError, match="re-read"):
        adm.apply_snapshot("s1", {key: 4000}, {"w": 400})
    assert adm.used(key) == 10_000 and adm.snapshot_id is None  # nothing changed
    ((after, upto, _),) = adm.rereads({"w": 400}).values()
    assert (after, upto) == (0, 400)
    # The log holding an event this instance never counted is refused too, before anything changes.
    stranger = (7, *contributions(Subject("tn_1", "key_1", "mallory"), ANCHOR, NOW, {"tokens": 10}))
    with pytest.raises(ValueError, match="never counted"):
        adm.apply_snapshot("s1", {key: 4000}, {"w": 400}, reread={"w": [stranger]})
    assert adm.used(key) == 10_000
    dropped = adm.apply_snapshot("s1", {key: 4000}, {"w": 400}, reread={"w": [events[s] for s in range(1, 401)]})
    assert dropped == 400 and adm.used(key) == 10_000
    # A watermark past every folded event drops the sums whole, no re-read needed.
    assert adm.rereads({"w": 950}) == {}
    assert adm.apply_snapshot("s2", {key: 9500}, {"w": 950}) == 550
    assert adm.used(key) == 10_000 and adm.folded_windows() == 0 and adm.retained_events() == 50
