"""Publish a limit snapshot for the API: a Parquet file, then an atomic swap of `current.json`.

The API polls current.json, checks the file's sha256 and row count, and counts on top of it only its live
events with seq above the watermark of their writer.
"""

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from chatmeter.schemas import SNAPSHOT_SCHEMA

MANIFEST = "current.json"
KEEP = 5


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """temp file in the same folder + fsync + os.replace: readers see the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def snapshot_id_at(created_at: datetime) -> str:
    return created_at.strftime("%Y%m%dT%H%M%S%fZ")


def publish_snapshot(
    snapshots_dir: Path, table: pa.Table, watermark: dict[str, int], created_at: datetime, keep: int = KEEP
) -> dict:
    """Write limits_<id>.parquet, then swap current.json to it; prune older files. Returns the manifest."""
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    table = table.select(SNAPSHOT_SCHEMA.names).cast(SNAPSHOT_SCHEMA)
    snapshot_id = snapshot_id_at(created_at)
    name = f"limits_{snapshot_id}.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    write_atomic(snapshots_dir / name, data)
    manifest = {
        "snapshot_id": snapshot_id,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
        "watermark": dict(sorted(watermark.items())),
        "file": name,
        "rows": table.num_rows,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    write_atomic(snapshots_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    prune(snapshots_dir, keep=keep, current=name)
    return manifest


def prune(snapshots_dir: Path, keep: int, current: str) -> list[Path]:
    """Delete all but the newest `keep` snapshot files (never the current one): a reader that just read the
    previous manifest can still open its file."""
    files = sorted(snapshots_dir.glob("limits_*.parquet"), key=lambda p: p.name, reverse=True)
    removed = []
    for path in files[keep:]:
        if path.name != current:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_current(snapshots_dir: Path) -> tuple[dict, pa.Table]:
    """Read and verify the current snapshot, as the API does."""
    manifest = json.loads((snapshots_dir / MANIFEST).read_text())
    data = (snapshots_dir / manifest["file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise ValueError("snapshot file does not match its manifest")
    table = pq.read_table(pa.BufferReader(data))
    if table.num_rows != manifest["rows"]:
        raise ValueError("snapshot row count does not match its manifest")
    return manifest, table
