"""Admission: holds against live counters, so no request can push a window past its hard limit.

For each applicable (meter, window, scope): used = snapshot.used (up to its watermark) + live events after
the watermark + open holds. A request holds `input bound + max_tokens` tokens (and its request, credits and
embedding tokens); where that does not fit but the input does, max_tokens is clamped to the headroom; where
the input alone does not fit, it is refused. Settling replaces the hold with the actual usage. Everything
here runs synchronously on the event loop, so check-and-hold is atomic on one instance.

Live events are kept one by one until a snapshot covers them, so that its swap can take back exactly those at or
below its watermark. While no snapshot comes (the pipeline is down), a writer's oldest events past `max_retained`
are folded into one sum per window instead: memory then grows with the windows in use, not with the events. A
snapshot whose watermark falls among folded events needs them back one by one: the caller re-reads them from
the log (`rereads`), which holds every event at or below a watermark.
"""

import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from chatmeter.catalog import METERS, Catalog, Limit, Plan
from chatmeter.windows import Window, billing_month, day_window

log = logging.getLogger(__name__)

Num = int | Decimal
EXPIRY_SWEEP_S = 1.0
# (tenant_id, scope, scope_id, meter, window, window_start as epoch seconds)
CounterKey = tuple[str, str, str, str, str, int]
# One window of one scope, (tenant_id, scope, scope_id, window, window_start as epoch seconds): the live counters
# keep every meter of it in one entry, so an event updates six entries, not six per meter it used.
WindowKey = tuple[str, str, str, str, int]
METER_INDEX = {meter: i for i, meter in enumerate(METERS)}


def window_key(key: CounterKey) -> WindowKey:
    return (key[0], key[1], key[2], key[4], key[5])


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a call is metered against."""

    tenant_id: str
    api_key_id: str
    end_user_id: str  # "" when the caller named none: anonymous users share one bucket

    def scope_id(self, scope: str) -> str:
        return {"tenant": self.tenant_id, "end_user": self.end_user_id, "key": self.api_key_id}[scope]


@dataclass(frozen=True, slots=True)
class Rule:
    """A hard limit in force for one counter."""

    limit: Limit
    window: Window
    key: CounterKey
    hard: Num
    # Where the live counters keep it: its window's entry, and the meter's place in the entry.
    live_key: WindowKey = field(init=False, repr=False, compare=False)
    meter_index: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "live_key", window_key(self.key))
        object.__setattr__(self, "meter_index", METER_INDEX[self.key[3]])


@dataclass(slots=True)
class Refusal:
    rule: Rule
    used: Num
    requested: Num

    @property
    def code(self) -> str:
        return f"{self.rule.limit.meter}_{self.rule.limit.window}_limit"


@dataclass(slots=True)
class Hold:
    hold_id: int
    amounts: dict[CounterKey, Num]
    expires_at: float
    max_tokens: int
    clamped: bool


# What one event adds, compactly: a tuple of plain values (the garbage collector does not track those, so
# keeping every live event since the last snapshot costs no collection time):
# (tenant_id, api_key_id, end_user_id, day window start, month window start, tokens, requests,
#  embedding tokens, credits)
Counted = tuple[str, str, str, int, int, Num, Num, Num, Num]


def counter_key(subject: Subject, scope: str, meter: str, window: Window) -> CounterKey:
    return (subject.tenant_id, scope, subject.scope_id(scope), meter, window.kind, window.start_epoch)


def contributions(subject: Subject, anchor_day: int, at: datetime, amounts: dict[str, Num]) -> Counted:
    """What an event adds: each meter it used, to be counted in every scope and window."""
    return (
        subject.tenant_id,
        subject.api_key_id,
        subject.end_user_id,
        day_window(at).start_epoch,
        billing_month(at, anchor_day).start_epoch,
        *[amounts.get(meter, 0) for meter in METERS],
    )


@dataclass(slots=True)
class Folded:
    """A writer's oldest live events, summed per (tenant, key, end user, day, month): every event it recorded
    with a seq above the watermark and at most `upto`."""

    upto: int
    sums: dict[tuple, list[Num]]
    first_day: int  # the earliest day window start among them (epoch seconds): where a re-read starts
    events: int = 0


def _sum_into(sums: dict[tuple, list[Num]], event: tuple) -> None:
    """Add an event, (seq, *Counted), to the sums of its (tenant, key, end user, day, month)."""
    counts = sums.get(event[1:6])
    if counts is None:
        counts = sums[event[1:6]] = [0] * len(METERS)
    for i, amount in enumerate(event[6:]):
        counts[i] += amount


# How many (tenant, key, end user, day, month) the request path keeps ready, both their window keys and their
# live entries: bounded, since every day brings new ones.
_MAX_ENTRIES = 8192


@lru_cache(maxsize=_MAX_ENTRIES)
def _window_keys(tenant: str, key: str, user: str, day: int, month: int) -> tuple[WindowKey, ...]:
    """The windows an event of this key and end user on this day counts in: every scope x both windows. The
    same for every such event, so built once (the live counters keep the same tuples as keys, so this holds
    little of its own, and finds them by identity)."""
    return (
        (tenant, "tenant", tenant, "day", day),
        (tenant, "tenant", tenant, "month", month),
        (tenant, "end_user", user, "day", day),
        (tenant, "end_user", user, "month", month),
        (tenant, "key", key, "day", day),
        (tenant, "key", key, "month", month),
    )


@dataclass
class Admission:
    """Counters for every tenant this instance serves."""

    hold_ttl_s: float = 120.0
    clock: Callable[[], float] = time.monotonic
    baseline: dict[CounterKey, Num] = field(default_factory=dict)
    # Per window of a scope, what live events added to each meter (in METERS order).
    live: dict[WindowKey, list[Num]] = field(default_factory=dict)
    held: defaultdict[CounterKey, Num] = field(default_factory=lambda: defaultdict(int))
    watermark: dict[str, int] = field(default_factory=dict)
    snapshot_id: str | None = None
    # Tenants whose end users the snapshot did not count: their plan did not limit end users when it was made.
    end_users_uncounted: frozenset[str] = frozenset()
    # Live events kept one by one per writer (~300 B each) before the oldest are folded (see the module's doc).
    max_retained: int = 500_000

    def __post_init__(self):
        self._holds: dict[int, Hold] = {}
        self._next_sweep = 0.0
        self._ids = itertools.count(1)
        # Per writer, the live events since the snapshot in force: (seq, *Counted), oldest first.
        self._retained: defaultdict[str, deque[tuple]] = defaultdict(deque)
        # Per writer, its oldest live events once there were more than max_retained, summed (older than _retained).
        self._folded: dict[str, Folded] = {}
        # Per (tenant, key, end user, day, month) of recent events, the live entries of its six windows: an
        # event adds to them without looking each up. Cleared whenever an entry leaves `live`.
        self._entries: dict[tuple, list[list[Num]]] = {}

    # --- reading ---

    def counted(self, key: CounterKey) -> Num:
        """The snapshot's count for a counter. For an end user it did not count (the tenant's plan changed to one
        limiting end users since), the tenant's: an end user never uses more than its tenant, so no limit can
        be overshot, at worst refused early until the next snapshot counts the end user."""
        if key[1] == "end_user" and key[0] in self.end_users_uncounted:
            key = (key[0], "tenant", key[0], key[3], key[4], key[5])
        return self.baseline.get(key, 0)

    def used(self, key: CounterKey) -> Num:
        """Settled usage: the snapshot's count plus live events after its watermark."""
        live = self.live.get(window_key(key))
        return self.counted(key) + (live[METER_INDEX[key[3]]] if live else 0)

    def reserved(self, key: CounterKey) -> Num:
        return self.held.get(key, 0)

    def rules(
        self,
        catalog: Catalog,
        plan: Plan,
        subject: Subject,
        anchor_day: int,
        now: datetime,
        topup_units: dict[str, int] | None = None,
    ) -> list[Rule]:
        """The hard limits that apply to this subject now; top-ups raise the tenant's monthly limit."""
        rules = []
        windows = {"day": day_window(now), "month": billing_month(now, anchor_day)}
        for limit in plan.limits:
            if limit.hard is None:
                continue
            window = windows[limit.window]
            hard: Num = int(limit.hard) if limit.meter != "credits" else limit.hard
            if topup_units and limit.window == "month" and limit.scope == "tenant":
                hard += topup_units.get(limit.meter, 0)
            rules.append(Rule(limit, window, counter_key(subject, limit.scope, limit.meter, window), hard))
        return rules

    # --- admitting ---

    def admit(
        self,
        rules: list[Rule],
        input_tokens: int,
        max_tokens: int,
        credits: Decimal,
        embedding_tokens: int = 0,
        kind: str = "chat",
    ) -> Hold | Refusal:
        """Hold what the call may use, clamping max_tokens to the token headroom; or refuse it."""
        now = self.clock()
        if now >= self._next_sweep:  # open holds are few (one per call under way): a sweep a second is cheap
            self._next_sweep = now + EXPIRY_SWEEP_S
            self.expire(now)
        chat = kind == "chat"
        effective = max_tokens
        baseline, live, held = self.baseline, self.live, self.held
        uncounted = self.end_users_uncounted
        wanted: list[tuple[CounterKey, Num | None]] = []  # None: the token hold, known once clamped
        for rule in rules:
            key = rule.key
            meter = key[3]
            live_counts = live.get(rule.live_key)
            # counted(key), without the call for the tenants whose end users the snapshot counted (nearly all)
            counted = self.counted(key) if uncounted and key[0] in uncounted else baseline.get(key, 0)
            used = counted + held.get(key, 0)
            if live_counts:
                used += live_counts[rule.meter_index]
            headroom = rule.hard - used
            if meter == "tokens":
                if not chat:
                    continue
                # At least one output token must fit, or the call is pointless.
                if input_tokens + 1 > headroom:
                    return Refusal(rule, used, input_tokens + 1)
                if headroom - input_tokens < effective:
                    effective = int(headroom) - input_tokens
                wanted.append((key, None))
                continue
            if meter == "requests":
                want = 1 if chat else 0
            elif meter == "credits":
                want = credits
            else:
                want = embedding_tokens if meter == "embedding_tokens" else 0
            if want > headroom:
                return Refusal(rule, used, want)
            if want:
                wanted.append((key, want))
        amounts: dict[CounterKey, Num] = {}
        for key, want in wanted:
            amount = input_tokens + effective if want is None else want
            amounts[key] = amounts.get(key, 0) + amount
            held[key] += amount
        hold = Hold(next(self._ids), amounts, now + self.hold_ttl_s, effective, effective < max_tokens)
        self._holds[hold.hold_id] = hold
        return hold

    def release(self, hold: Hold) -> None:
        """Drop a hold (the call ended, failed, or expired). Releasing twice is harmless."""
        if self._holds.pop(hold.hold_id, None) is None:
            return
        for key, amount in hold.amounts.items():
            left = self.held[key] - amount
            if left:
                self.held[key] = left
            else:
                del self.held[key]

    def expire(self, now: float | None = None) -> int:
        """Release the holds past their expiry (a call that never settled); return how many."""
        now = self.clock() if now is None else now
        expired = [hold for hold in self._holds.values() if hold.expires_at <= now]
        for hold in expired:
            log.warning("hold %s expired before it was settled", hold.hold_id)
            self.release(hold)
        return len(expired)

    def open_holds(self) -> int:
        return len(self._holds)

    # --- settling ---

    def record(self, writer_id: str, seq: int, counted: Counted) -> None:
        """Count a durable event as live, unless the snapshot in force already includes it."""
        if seq <= self.watermark.get(writer_id, 0):
            return
        where = counted[:5]
        entries = self._entries.get(where)
        if entries is None:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            live = self.live
            entries = self._entries[where] = [live.setdefault(key, [0] * len(METERS)) for key in _window_keys(*where)]
        for i, amount in enumerate(counted[5:]):
            if amount:
                for counts in entries:
                    counts[i] += amount
        retained = self._retained[writer_id]
        retained.append((seq, *counted))
        if len(retained) > self.max_retained:
            self._fold(writer_id, retained)

    def _fold(self, writer_id: str, retained: deque[tuple]) -> None:
        """Sum a writer's oldest live events per window, a slice at a time (7,812 events at the default, a few
        ms) not to stall the requests."""
        folded = self._folded.get(writer_id)
        if folded is None:
            folded = self._folded[writer_id] = Folded(0, {}, retained[0][4])
        for _ in range(max(1, self.max_retained // 64)):
            event = retained.popleft()
            _sum_into(folded.sums, event)
            if event[4] < folded.first_day:
                folded.first_day = event[4]
            folded.events += 1
        folded.upto = event[0]

    def _uncount(self, where: tuple, amounts: Sequence[Num]) -> None:
        """Take back an event's amounts per meter in each of its windows; a window whose meters are all back to
        zero is dropped."""
        taken = [(i, amount) for i, amount in enumerate(amounts) if amount]
        live = self.live
        for key in _window_keys(*where):
            counts = live.get(key)
            if counts is None:
                counts = live[key] = [0] * len(METERS)
            for i, amount in taken:
                counts[i] -= amount
            if not any(counts):
                del live[key]
                self._entries.clear()

    # --- snapshots ---

    def rereads(self, watermark: dict[str, int]) -> dict[str, tuple[int, int, int]]:
        """The events a snapshot with this watermark needs re-read from the log before its swap: per writer whose
        new watermark falls among its folded events, (seq after, seq up to, earliest day window start)."""
        wanted = {}
        for writer, folded in self._folded.items():
            mark, current = watermark.get(writer, 0), self.watermark.get(writer, 0)
            if current < mark < folded.upto:
                wanted[writer] = (current, mark, folded.first_day)
        return wanted

    def apply_snapshot(
        self,
        snapshot_id: str,
        rows: dict[CounterKey, Num],
        watermark: dict[str, int],
        end_users_uncounted: frozenset[str] = frozenset(),
        reread: dict[str, Sequence[tuple]] | None = None,
    ) -> int:
        """Swap in a new baseline and drop the live deltas at or below its watermark. Returns events dropped.

        `reread` holds, per writer of `rereads(watermark)`, its events in that range from the log, each as
        `(seq, *Counted)`; without them the swap is refused (ValueError) and nothing changes."""
        for writer, mark in self.watermark.items():
            if watermark.get(writer, 0) < mark:
                raise ValueError(f"snapshot {snapshot_id} goes back in time for writer {writer}")
        reread, wanted = reread or {}, self.rereads(watermark)
        missing = sorted(set(wanted) - set(reread))
        if missing:
            raise ValueError(f"snapshot {snapshot_id} needs the folded events of {', '.join(missing)} re-read")
        unfolded = {writer: self._unfolded(writer, reread[writer], watermark[writer]) for writer in wanted}
        dropped = 0
        for writer, mark in watermark.items():
            folded = self._folded.get(writer)
            if writer in unfolded:
                taken, events = unfolded[writer]
                dropped += events
                folded.events -= events
                for where, amounts in taken.items():
                    self._uncount(where, amounts)
                    counts = folded.sums[where]
                    for i, amount in enumerate(amounts):
                        counts[i] -= amount
                    if not any(counts):
                        del folded.sums[where]
            elif folded is not None and mark >= folded.upto:
                for where, counts in folded.sums.items():
                    self._uncount(where, counts)
                dropped += folded.events
                del self._folded[writer]
            retained = self._retained[writer]
            while retained and retained[0][0] <= mark:
                event = retained.popleft()
                dropped += 1
                self._uncount(event[1:6], event[6:])
        self.baseline = rows
        self.end_users_uncounted = end_users_uncounted
        self.watermark = dict(watermark)
        self.snapshot_id = snapshot_id
        return dropped

    def _unfolded(self, writer: str, events: Sequence[tuple], mark: int) -> tuple[dict[tuple, list[Num]], int]:
        """What the re-read events at or below `mark` take back from the writer's folded sums, per window, and
        how many they are; a ValueError, before anything changed, if the log holds more than was folded."""
        folded = self._folded[writer]
        taken: dict[tuple, list[Num]] = {}
        count = 0
        for event in events:
            if event[0] > mark or not any(event[6:]):
                continue
            count += 1
            _sum_into(taken, event)
        for where, amounts in taken.items():
            have = folded.sums.get(where)
            if have is None or any(amount > had for amount, had in zip(amounts, have, strict=True)):
                raise ValueError(f"the log holds events of writer {writer} this instance never counted ({where})")
        return taken, count

    def retained_events(self) -> int:
        """Live events kept one by one (the folded ones are not among them)."""
        return sum(len(d) for d in self._retained.values())

    def folded_windows(self) -> int:
        return sum(len(f.sums) for f in self._folded.values())
