"""Publish a limit snapshot for the API: a Parquet file, then an atomic swap of `current.json`.

The API polls current.json, checks the file's sha256 and row count, and counts on top of it only its live
events with seq above the watermark of their writer.
"""

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from chatmeter.files import fsync_dir
from chatmeter.schemas import SNAPSHOT_SCHEMA

MANIFEST = "current.json"
KEEP = 5


def _temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_temp(path: Path, data: bytes) -> os.stat_result:
    with open(_temp(path), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return os.fstat(f.fileno())


def write_atomic_many(files: Iterable[tuple[Path, bytes]], threads: int = 4) -> list[os.stat_result]:
    """Each file as write_atomic writes one, but each folder fsync'd once at the end rather than once per
    file, and the files' fsyncs on a few threads (the disk takes them together: measured here, a third to a
    half less time per file). Returns each file's stat, for a caller to check the file against later."""
    files = list(files)
    try:
        if len(files) <= 1:
            stats = [_write_temp(path, data) for path, data in files]
        else:
            with ThreadPoolExecutor(min(threads, len(files))) as pool:
                stats = list(pool.map(lambda file: _write_temp(*file), files))
    except BaseException:
        for path, _ in files:
            _temp(path).unlink(missing_ok=True)
        raise
    for path, _ in files:
        os.replace(_temp(path), path)
    for folder in {path.parent for path, _ in files}:
        fsync_dir(folder)
    # A rename keeps a file's inode, size and mtime: the temp file's stat is the final file's.
    return stats


def write_atomic(path: Path, data: bytes) -> None:
    """temp file in the same folder + fsync + os.replace: readers see the old file or the new, never half."""
    write_atomic_many([(path, data)])


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
