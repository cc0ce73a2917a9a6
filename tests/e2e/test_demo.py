"""`chatmeter demo` end to end, as `make demo` runs it, in a data dir of its own."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_the_whole_loop(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "CHATMETER_DATA_DIR": str(data)}
    result = subprocess.run(
        [sys.executable, "-m", "chatmeter.cli", "demo"], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "HTTP 429" in out and "tokens_month_limit" in out
    assert "Litware after snapshot" in out
    manifest = json.loads((data / "snapshots" / "current.json").read_text())
    assert (data / "snapshots" / manifest["file"]).exists()
    assert (data / "warehouse.duckdb").exists()
    invoices = list((data / "invoices").glob("*/*.json"))
    assert invoices and all(p.with_suffix(".html").exists() for p in invoices)
    finalized = [json.loads(p.read_text()) for p in invoices]
    assert any(doc["status"] == "finalized" for doc in finalized)
    # A second run refuses to wipe a data dir that is not the demo's.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    refused = subprocess.run(
        [sys.executable, "-m", "chatmeter.cli", "demo"],
        capture_output=True,
        text=True,
        env={**os.environ, "CHATMETER_DATA_DIR": str(other)},
        timeout=60,
    )
    assert refused.returncode != 0 and (other / "precious.txt").exists()
