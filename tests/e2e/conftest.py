"""Cross-process fixtures: `chatmeter serve` in a child process on a free loopback port."""

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest

from chatmeter.schemas import EVENT_SCHEMA
from chatmeter.serve_process import ServeProcess

ADMIN = "e2e-admin-token"


class Server(ServeProcess):
    """The API in a child process with a data dir of its own, and what the tests ask of it."""

    def __init__(self, data_dir: Path, **env: str):
        self.data_dir = data_dir
        super().__init__(
            {
                **os.environ,
                "CHATMETER_DATA_DIR": str(data_dir),
                "CHATMETER_ADMIN_TOKEN": ADMIN,
                "CHATMETER_WAL_ROLL_AGE_S": "0.5",
                "CHATMETER_RELOAD_INTERVAL_S": "0.1",
                **env,
            }
        )

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)

    def create_tenant(self, plan: str = "free", name: str = "Acme") -> dict:
        with self.admin() as admin:
            r = admin.post("/admin/tenants", json={"name": name, "plan": plan})
            r.raise_for_status()
            return r.json()

    def events(self):
        """The Parquet log as written (a Table), deduplicated on event_id."""
        root = self.data_dir / "events"
        table = ds.dataset(root, format="parquet", partitioning="hive", schema=EVENT_SCHEMA).to_table()
        return table


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()
