"""Files that pass between the parts, written durably and atomically: a reader sees the old file or the new one,
never half of one, and after a crash the new one is either whole or absent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a table is written: the WAL's writer process uses fsync_dir without Arrow
    import pyarrow as pa


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def ensure_dir(path: Path) -> None:
    """The folder, created durably when missing."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        fsync_dir(path.parent)


def write_parquet(table: pa.Table, path: Path, **options) -> None:
    """`table` at `path` (pyarrow.parquet.write_table's options): written to a hidden temp name in the same
    folder (`.<name>.tmp`), fsynced, renamed over `path`, and the rename made durable."""
    import pyarrow.parquet as pq

    ensure_dir(path.parent)
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp, **options)
    _fsync(temp)
    os.replace(temp, path)
    fsync_dir(path.parent)
