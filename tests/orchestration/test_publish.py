"""The snapshot swap: readers always see a complete, verified snapshot; old files are pruned."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from chatmeter.schemas import SNAPSHOT_SCHEMA
from orchestration.defs.snapshots.publish import KEEP, publish_snapshot, read_current


def table(n: int) -> pa.Table:
    start = datetime(2026, 11, 20, tzinfo=UTC)
    rows = [
        dict(
            tenant_id=f"t{i}",
            scope="tenant",
            scope_id=f"t{i}",
            meter="tokens",
            window="day",
            window_start=start,
            window_end=start + timedelta(days=1),
            used=Decimal(i),
            limit=Decimal(100),
            remaining=Decimal(100 - i),
        )
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA)


def test_publish_swaps_atomically_and_prunes(tmp_path):
    folder = tmp_path / "snapshots"
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    publish_snapshot(folder, table(1), {"w": 1}, at)
    errors, reads = [], []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                manifest, t = read_current(folder)
                reads.append(manifest["rows"])
                assert t.num_rows == manifest["rows"]
            except Exception as exc:  # any partial or mismatched read fails the test
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(2, 12):
        manifest = publish_snapshot(folder, table(i * 50), {"w": i}, at + timedelta(minutes=i))
    stop.set()
    thread.join()
    assert not errors and reads
    assert manifest["watermark"] == {"w": 11} and manifest["rows"] == 550
    files = sorted(p.name for p in folder.glob("limits_*.parquet"))
    assert len(files) == KEEP and manifest["file"] == files[-1]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
