"""What one API process holds: settings, stores, the catalog in force, counters, the log, the provider."""

import asyncio
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from chatmeter.catalog import Catalog, CatalogStore, Plan
from chatmeter.metering import Usage, quantities
from chatmeter.pricing import provider_cost
from chatmeter.settings import Settings
from chatmeter.store import ApiKey, BillingState, Store, Tenant, WidgetKey
from chatmeter.windows import billing_month, utcnow
from serving import snapshots
from serving.admission import Admission, Counted, Subject, contributions
from serving.eventlog import EventLog, read_events_after
from serving.providers import make_provider
from serving.providers.base import Provider
from serving.sessions import Sessions

log = logging.getLogger(__name__)
BILLING_CHECK_S = 60.0
GC_YOUNG_THRESHOLD = 10_000
# What counting an event from the log needs.
COUNTED_COLUMNS = [
    "writer_id",
    "seq",
    "occurred_at",
    "tenant_id",
    "api_key_id",
    "end_user_id",
    "kind",
    "status",
    "input_tokens",
    "output_tokens",
    "embedding_tokens",
    "credits",
]


@dataclass(frozen=True, slots=True)
class TenantContext:
    """A tenant as admission sees it, cached for a few seconds."""

    tenant: Tenant
    plan_id: str
    plan: Plan
    topup_units: dict[str, int]  # units bought for the current billing month, per meter
    loaded_at: float
    # The hard limits in force per (api_key_id, end_user_id, UTC date), while this context is cached.
    rules: dict[tuple, list] = field(default_factory=dict, compare=False)


class Runtime:
    def __init__(self, settings: Settings, provider: Provider | None = None):
        self.settings = settings
        for path in (settings.data_dir, settings.snapshots_dir, settings.catalog_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.metadata_url)
        self.catalogs = CatalogStore(settings.catalog_path, settings.catalog_dir)
        self.admission = Admission(hold_ttl_s=settings.request_timeout_s + 5)
        self.log = EventLog(
            settings.data_dir,
            settings.writer_id,
            roll_bytes=settings.wal_roll_bytes,
            roll_age_s=settings.wal_roll_age_s,
            idempotency_ttl_h=settings.idempotency_ttl_h,
        )
        self.provider = provider or make_provider(settings.provider, simulated_latency_ms=settings.simulated_latency_ms)
        self.idempotency: dict[tuple[str, str], dict] = {}
        # Idempotency keys of calls under way, until when (a stream never started is forgotten by then).
        self.in_flight: dict[tuple[str, str], float] = {}
        self.sessions = Sessions()
        self._tenants: dict[str, TenantContext] = {}
        self._keys: dict[str, tuple[ApiKey | None, float]] = {}
        self._widget_keys: dict[str, tuple[WidgetKey | None, float]] = {}
        self._snapshot_mtime: int | None = None
        self._watcher: asyncio.Task | None = None
        self.started_at = time.time()
        self.snapshot_errors = 0
        self._gc_threshold: tuple[int, ...] | None = None

    @property
    def catalog(self) -> Catalog:
        return self.catalogs.current

    # --- start-up and shutdown ---

    async def start(self) -> None:
        """Recover the log, then rebuild counters: the newest snapshot plus every event after its watermark."""
        last_seq = await asyncio.to_thread(self.log.recover)
        self.idempotency = await asyncio.to_thread(self.log.load_idempotency)
        await asyncio.to_thread(self._rebuild_counters)
        await self.log.start()
        self._settle_heap()
        self._watcher = asyncio.create_task(self._watch())
        log.info(
            "serving: writer %s from seq %d, %d live events after snapshot %s",
            self.settings.writer_id,
            last_seq + 1,
            self.admission.retained_events(),
            self.admission.snapshot_id,
        )

    def _settle_heap(self) -> None:
        """Load what the request path loads lazily (price data, routes), then move the start-up heap out of
        the garbage collector's sight: full collections walking it cost ~70 ms each, the API's p99."""
        provider_cost(
            self.catalog, self.catalog.default_model, Usage(input_tokens=1, output_tokens=1), self.provider.name
        )
        gc.collect()
        gc.freeze()
        # A metered call allocates a few dozen containers (event, transcripts, futures, holds): at the default
        # threshold (700) a young collection ran every few calls, walking everything in flight, ~20 µs a call
        # (`python -m benchmarks.inprocess`). At 10,000 it runs about once per hundred calls.
        self._gc_threshold = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *self._gc_threshold[1:])

    async def close(self) -> None:
        gc.unfreeze()
        if self._gc_threshold:
            gc.set_threshold(*self._gc_threshold)
        if self._watcher:
            self._watcher.cancel()
        await self.log.close()
        await self.provider.aclose()
        self.store.engine.dispose()

    def _rebuild_counters(self) -> None:
        self._snapshot_mtime = snapshots.manifest_mtime(self.settings.snapshots_dir)
        if self._snapshot_mtime is not None:
            try:
                self._apply_snapshot(snapshots.load_snapshot(self.settings.snapshots_dir))
            except (snapshots.SnapshotError, ValueError) as exc:
                self.snapshot_errors += 1
                log.error("limit snapshot ignored: %s", exc)
        since = utcnow() - timedelta(days=32)  # the oldest start a current window can have
        table = read_events_after(self.settings.events_dir, self.admission.watermark, since, columns=COUNTED_COLUMNS)
        for writer, seq, counted in self._counted(table.sort_by([("writer_id", "ascending"), ("seq", "ascending")])):
            self.admission.record(writer, seq, counted)

    def _counted(self, table) -> Iterator[tuple[str, int, Counted]]:
        """Each event of `table` (COUNTED_COLUMNS) that adds to a meter, as admission counts it: (writer, seq, what it
        adds). Like a settled call's, an event that adds nothing (a refusal) is not counted: it would only keep
        empty windows and a retained entry until the next snapshot."""
        anchors = {t.tenant_id: t.anchor_day for t in self.store.list_tenants()}
        for row in table.to_pylist():
            usage = Usage(
                input_tokens=row["input_tokens"] or 0,
                output_tokens=row["output_tokens"] or 0,
                embedding_tokens=row["embedding_tokens"] or 0,
            )
            amounts = quantities(row["kind"], row["status"], usage, row["credits"] or 0)
            if amounts:
                subject = Subject(row["tenant_id"], row["api_key_id"] or "", row["end_user_id"] or "")
                anchor = anchors.get(row["tenant_id"], 1)
                yield row["writer_id"], row["seq"], contributions(subject, anchor, row["occurred_at"], amounts)

    def _read_folded(self, wanted: dict[str, tuple[int, int, int]]) -> dict[str, list[tuple]]:
        """Per writer of `wanted` (admission's rereads), its events in (after, up to] from the log, as admission
        counted them: (seq, *Counted)."""
        since = datetime.fromtimestamp(min(first_day for _, _, first_day in wanted.values()), UTC)
        after = {writer: seqs[0] for writer, seqs in wanted.items()}
        upto = {writer: seqs[1] for writer, seqs in wanted.items()}
        table = read_events_after(self.settings.events_dir, after, since, columns=COUNTED_COLUMNS, upto=upto)
        events: dict[str, list[tuple]] = {writer: [] for writer in wanted}
        for writer, seq, counted in self._counted(table):
            events[writer].append((seq, *counted))
        return events

    async def _watch(self) -> None:
        """Pick up new limit snapshots and catalog changes without a restart; suspend past-due tenants."""
        last_billing_check = 0.0
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await self.check_snapshot()
                self.catalogs.reload_if_changed()
                if time.monotonic() - last_billing_check > BILLING_CHECK_S:
                    last_billing_check = time.monotonic()
                    await asyncio.to_thread(self.suspend_overdue)
            except Exception:  # the watcher must outlive any one bad file
                log.exception("reload failed")

    def suspend_overdue(self) -> list[str]:
        suspended = BillingState(self.store).suspend_overdue(utcnow(), self.settings.grace_days)
        for tenant_id in suspended:
            log.warning("tenant %s suspended: an invoice is unpaid past %d days", tenant_id, self.settings.grace_days)
            self.forget_tenant(tenant_id)
        return suspended

    def _apply_snapshot(self, snap: snapshots.Snapshot, reread: dict[str, list[tuple]] | None = None) -> int:
        """Put `snap` in force; the live events it folds in."""
        return self.admission.apply_snapshot(
            snap.snapshot_id, snap.rows, snap.watermark, snap.end_users_uncounted, reread
        )

    async def check_snapshot(self) -> bool:
        """Put a newly published snapshot in force: read off the event loop (the file, and the folded events it
        needs re-read from the log, see Admission), swapped in on it."""
        mtime = snapshots.manifest_mtime(self.settings.snapshots_dir)
        if mtime is None or mtime == self._snapshot_mtime:
            return False
        self._snapshot_mtime = mtime
        try:
            snap = await asyncio.to_thread(snapshots.load_snapshot, self.settings.snapshots_dir)
            if snap.snapshot_id == self.admission.snapshot_id:
                return False
            reread: dict[str, list[tuple]] = {}
            # Requests go on during a read and may fold more events: whatever the swap needs is read before it.
            while wanted := {w: r for w, r in self.admission.rereads(snap.watermark).items() if w not in reread}:
                reread.update(await asyncio.to_thread(self._read_folded, wanted))
            dropped = self._apply_snapshot(snap, reread)
        except (snapshots.SnapshotError, ValueError, OSError, pa.ArrowException) as exc:
            self.snapshot_errors += 1
            log.error("limit snapshot ignored, the previous one stays in force: %s", exc)
            return False
        log.info(
            "limit snapshot %s in force (%d rows); %d live events folded in", snap.snapshot_id, len(snap.rows), dropped
        )
        return True

    # --- tenants and keys, cached briefly so the request path stays in memory ---

    def tenant_context(self, tenant_id: str, now: datetime | None = None) -> TenantContext | None:
        cached = self._tenants.get(tenant_id)
        if cached is not None and time.monotonic() - cached.loaded_at < self.settings.auth_cache_ttl_s:
            return cached
        tenant = self.store.get_tenant(tenant_id)
        if tenant is None:
            return None
        now = now or utcnow()
        plan_id = self.store.plan_at(tenant_id, now) or self.catalog.default_plan
        plan = self.catalog.plans.get(plan_id) or self.catalog.plans[self.catalog.default_plan]
        month = billing_month(now, tenant.anchor_day)
        units: dict[str, int] = {}
        for topup in self.store.topups(tenant_id):
            # A top-up raises the monthly limit of the billing month it was bought in.
            if month.start <= topup.granted_at < month.end and (topup.expires_at is None or topup.expires_at > now):
                units[topup.meter] = units.get(topup.meter, 0) + topup.units
        ctx = TenantContext(tenant, plan_id, plan, units, time.monotonic())
        self._tenants[tenant_id] = ctx
        return ctx

    def forget_all_tenants(self) -> None:
        self._tenants.clear()

    def forget_tenant(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)
        self._keys.clear()
        self._widget_keys.clear()

    def api_key(self, secret: str) -> ApiKey | None:
        return self._cached(self._keys, secret, self.store.find_api_key)

    def widget_key(self, key: str) -> WidgetKey | None:
        return self._cached(self._widget_keys, key, self.store.find_widget_key)

    def _cached(self, cache: dict, key: str, load):
        """`load(key)`, remembered for the auth cache TTL (a miss too: a bad key costs one query per TTL)."""
        now = time.monotonic()
        hit = cache.get(key)
        if hit is not None and now - hit[1] < self.settings.auth_cache_ttl_s:
            return hit[0]
        value = load(key)
        if len(cache) > 100_000:
            cache.clear()
        cache[key] = (value, now)
        return value
