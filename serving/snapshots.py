"""Limit snapshots published by the pipeline: `snapshots/current.json` names a Parquet file of counts.

A corrupt, half-written or inconsistent snapshot is refused with a logged error; the one in force stays.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq

from chatmeter.schemas import SNAPSHOT_SCHEMA
from serving.admission import CounterKey, Num

log = logging.getLogger(__name__)

MANIFEST = "current.json"


class SnapshotError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot_id: str
    watermark: dict[str, int]
    rows: dict[CounterKey, Num]
    # Tenants whose end users the snapshot did not count (their plan did not limit them when it was made).
    end_users_uncounted: frozenset[str] = frozenset()


def manifest_mtime(snapshots_dir: Path) -> float | None:
    try:
        return (snapshots_dir / MANIFEST).stat().st_mtime_ns
    except OSError:
        return None


def load_snapshot(snapshots_dir: Path) -> Snapshot:
    """Read and check the current snapshot; raises SnapshotError when it cannot be trusted."""
    try:
        manifest = json.loads((snapshots_dir / MANIFEST).read_text())
        snapshot_id = str(manifest["snapshot_id"])
        watermark = {str(w): int(s) for w, s in manifest["watermark"].items()}
        path = snapshots_dir / Path(manifest["file"]).name
        expected_rows = int(manifest["rows"])
        expected_sha = str(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"unreadable manifest: {exc}") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"snapshot file missing: {exc}") from None
    if hashlib.sha256(data).hexdigest() != expected_sha:
        raise SnapshotError(f"{path.name}: checksum does not match the manifest (corrupt or half-written)")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SnapshotError(f"{path.name}: not a readable Parquet file: {exc}") from None
    if table.num_rows != expected_rows:
        raise SnapshotError(f"{path.name}: {table.num_rows} rows, manifest says {expected_rows}")
    missing = {"tenant_id", "scope", "scope_id", "meter", "window", "window_start", "used"} - set(table.column_names)
    if missing:
        raise SnapshotError(f"{path.name}: missing columns {sorted(missing)} (expected {SNAPSHOT_SCHEMA.names})")
    rows: dict[CounterKey, Num] = {}
    cols = table.select(["tenant_id", "scope", "scope_id", "meter", "window", "window_start", "used"]).to_pydict()
    try:
        for tenant, scope, scope_id, meter, window, start, used in zip(*cols.values(), strict=True):
            amount = Decimal(used) if meter == "credits" else int(used)
            key = (tenant, scope, scope_id or "", meter, window, int(start.timestamp()))
            rows[key] = rows.get(key, 0) + amount
    except (TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        # Right columns, unusable values (a null count, a window start that is no time): refuse it whole.
        raise SnapshotError(f"{path.name}: unusable row: {exc}") from None
    uncounted: frozenset[str] = frozenset()
    if "end_users_counted" in table.column_names:
        counted = table.select(["tenant_id", "end_users_counted"]).to_pydict()
        uncounted = frozenset(t for t, c in zip(*counted.values(), strict=True) if c is False)
    return Snapshot(snapshot_id, watermark, rows, uncounted)
