"""kill -9 under load: every append whose seq was returned is in Parquet exactly once after recovery."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from chatmeter.schemas import EVENT_SCHEMA, TRANSCRIPT_SCHEMA
from serving.eventlog import EventLog

CHILD = Path(__file__).with_name("eventlog_child.py")
REPO = Path(__file__).resolve().parents[2]


def append_until_killed(data_dir: Path, acknowledged: int) -> list[str]:
    """Run the child until it has acknowledged at least `acknowledged` appends, kill -9 it, return the
    event_ids it printed (whole lines only)."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), "64"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if len(lines) >= acknowledged:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        lines.extend(proc.stdout.readlines())  # what it printed before dying
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the child died by itself"
    return [line.decode().strip() for line in lines if line.endswith(b"\n")]


def parquet(root: Path, schema):
    return pq.ParquetDataset(sorted(root.glob("**/*.parquet")), schema=schema).read()


def test_acknowledged_appends_survive_kill_9_exactly_once(tmp_path):
    acknowledged = []
    for _ in range(2):
        acknowledged += append_until_killed(tmp_path, 3000)
        last = EventLog(tmp_path, "crash").recover()

        assert list((tmp_path / "wal").iterdir()) == []
        assert list(tmp_path.rglob("*.tmp")) == []
        events = parquet(tmp_path / "events", EVENT_SCHEMA)
        ids = events["event_id"].to_pylist()
        assert len(ids) == len(set(ids)), "an event rolled twice"
        assert set(acknowledged) <= set(ids), "an acknowledged append was lost"
        assert sorted(events["seq"].to_pylist()) == list(range(1, last + 1))  # dense, never reused
        transcripts = parquet(tmp_path / "transcripts", TRANSCRIPT_SCHEMA)
        assert sorted(transcripts["event_id"].to_pylist()) == sorted(ids)

    assert len(set(acknowledged)) == len(acknowledged) >= 6000
