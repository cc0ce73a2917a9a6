"""The DuckDB warehouse as Python assets open it (dbt writes it; only the pipeline ever opens it)."""

import contextlib
from collections.abc import Iterator

import duckdb

from chatmeter.settings import Settings


@contextlib.contextmanager
def connect(settings: Settings, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=read_only)
    try:
        con.execute("set TimeZone = 'UTC'")
        yield con
    finally:
        con.close()
