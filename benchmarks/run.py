"""`make bench`: figures as JSON (also written to benchmarks/results/latest.json), each a median over
repeated runs, ratios measured in the same run so a noisy machine does not mislead.

Environment: BENCH_DURATION_S (wrk run, default 8), BENCH_REPEATS (3), BENCH_SOAK_S (180),
BENCH_SKIP (comma-separated sections to skip: log, inprocess, api, snapshot, soak, peer, pipeline)."""

import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.api import CONNECTIONS, DURATION_S, REPEATS, Api, bench_api
from benchmarks.inprocess import bench_inprocess
from benchmarks.log import bench_log
from benchmarks.peer import bench_peer
from benchmarks.snapshot import bench_snapshot
from benchmarks.soak import bench_soak

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
SOAK_S = float(os.environ.get("BENCH_SOAK_S", "180"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    results: dict = {
        "machine.cores": os.cpu_count(),
        "repeats": REPEATS,
        "wrk.duration_s": DURATION_S,
        "wrk.connections": CONNECTIONS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "log" not in SKIP:
            results.update(bench_log(work, REPEATS))
        if "inprocess" not in SKIP:  # where the API's CPU goes, without HTTP: metering's own cost per request
            results.update(bench_inprocess(rounds=max(REPEATS, 5)))
        api = Api(work / "api-data")
        try:
            if "api" not in SKIP:
                results.update(bench_api(api, work))
            if "snapshot" not in SKIP:
                results.update(bench_snapshot(api, max(REPEATS, 5)))
        finally:
            api.stop()
        if "peer" not in SKIP and results.get("api.metered_rps"):
            results.update(bench_peer(work, results["api.metered_rps"], REPEATS))
        if "soak" not in SKIP:
            soak_api = Api(work / "soak-data")
            try:
                results.update(bench_soak(soak_api, SOAK_S))
            finally:
                soak_api.stop()
        if "pipeline" not in SKIP:
            try:
                from benchmarks.pipeline import bench_pipeline
            except ImportError as exc:
                results["pipeline.error"] = f"not available: {exc}"
            else:
                results.update(bench_pipeline(work))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
