"""The API under load from wrk (a separate process, on loopback): metered vs the same app's unmetered route.

Two loads. Saturated (the issue's figures): every connection sends its next request as soon as the last is
answered, so the server is always busy and a request's latency is mostly its wait behind the others: with C
connections, latency is about C times the server's time per request, and `p50_added_ms` about C times what
metering adds to that time. Paced (`api.paced_*`): each connection waits a random (exponential) think time before
each request, so that both routes get the same offered load, PACED_SHARE of the metered route's saturated
throughput: the latency metering adds to a request when requests do not queue behind each other's metering.
"""

import json
import os
import re
import statistics
import subprocess
from pathlib import Path

import httpx

from chatmeter.catalog import SHIPPED_CATALOG
from chatmeter.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parent
ADMIN = "bench-admin"
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
DURATION_S = int(os.environ.get("BENCH_DURATION_S", "8"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PACED_SHARE = 0.5
# Admission runs in full for this plan (hard limits on every scope), but nobody reaches them.
BENCH_PLAN = """
[plans.bench]
name = "Bench"
monthly_fee = "0"
limits = [
  { meter = "tokens", window = "month", included = 1000000000000, hard = 1000000000000 },
  { meter = "requests", window = "day", included = 1000000000, hard = 1000000000 },
  { meter = "tokens", window = "day", scope = "end_user", included = 1000000000000, hard = 1000000000000 },
  { meter = "requests", window = "day", scope = "key", included = 1000000000, hard = 1000000000 },
]
"""
BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 64,
    "user": "bench-user",
    "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "How do I reset my password? I tried twice already."},
    ],
}


class Api(ServeProcess):
    """The API with a catalog holding the bench plan, and a tenant on it."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        catalog = data_dir.parent / "catalog.toml"
        catalog.write_text(SHIPPED_CATALOG.read_text() + BENCH_PLAN)
        super().__init__(
            {
                **os.environ,
                "CHATMETER_DATA_DIR": str(data_dir),
                "CHATMETER_ADMIN_TOKEN": ADMIN,
                "CHATMETER_CATALOG_PATH": str(catalog),
                "CHATMETER_BENCH_ROUTES": "1",
            }
        )
        self.start()
        r = httpx.post(
            f"{self.url}/admin/tenants",
            json={"name": "bench", "plan": "bench"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        r.raise_for_status()
        self.key = r.json()["api_key"]


def wrk(url: str, path: str, key: str, body: dict, workdir: Path, rate: float | None = None) -> dict:
    """One wrk run; with `rate` (requests per second over all connections), each connection waits an exponential
    think time (mean CONNECTIONS / rate) before each request, which wrk leaves out of the latency."""
    script = workdir / "post.lua"
    think = (
        f"local mean_ms = {CONNECTIONS / rate * 1000:.3f}\n"
        "function delay() return math.floor(-math.log(1 - math.random()) * mean_ms + 0.5) end\n"
        if rate
        else ""
    )
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        f"{think}"
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("P50_US %d\\nP99_US %d\\nNON2XX %d\\n", latency:percentile(50),'
        " latency:percentile(99), summary.errors.status))\n"
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", "-s", str(script), f"{url}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": int(re.search(r"P50_US (\d+)", out).group(1)) / 1000,
        "p99_ms": int(re.search(r"P99_US (\d+)", out).group(1)) / 1000,
        "non_2xx": int(re.search(r"NON2XX (\d+)", out).group(1)),
    }


def bench_api(api: Api, workdir: Path) -> dict:
    wrk(api.url, "/v1/chat/completions", api.key, BODY, workdir)  # warm-up
    metered, unmetered, streamed = [], [], []
    for _ in range(REPEATS):  # interleaved, so drift affects both alike
        unmetered.append(wrk(api.url, "/bench/unmetered", api.key, BODY, workdir))
        metered.append(wrk(api.url, "/v1/chat/completions", api.key, BODY, workdir))
        streamed.append(wrk(api.url, "/v1/chat/completions", api.key, {**BODY, "stream": True}, workdir))

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rate = PACED_SHARE * med(metered, "rps")
    paced_metered, paced_unmetered = [], []
    for _ in range(REPEATS):
        paced_unmetered.append(wrk(api.url, "/bench/unmetered", api.key, BODY, workdir, rate))
        paced_metered.append(wrk(api.url, "/v1/chat/completions", api.key, BODY, workdir, rate))

    return {
        "api.metered_rps": round(med(metered, "rps"), 1),
        "api.unmetered_rps": round(med(unmetered, "rps"), 1),
        "api.throughput_ratio": round(med(metered, "rps") / med(unmetered, "rps"), 3),
        "api.p50_added_ms": round(med(metered, "p50_ms") - med(unmetered, "p50_ms"), 3),
        "api.p99_added_ms": round(med(metered, "p99_ms") - med(unmetered, "p99_ms"), 3),
        "api.metered_p50_ms": med(metered, "p50_ms"),
        "api.metered_p99_ms": med(metered, "p99_ms"),
        "api.unmetered_p50_ms": med(unmetered, "p50_ms"),
        "api.unmetered_p99_ms": med(unmetered, "p99_ms"),
        "api.concurrency": CONNECTIONS,
        "api.stream_metered_rps": round(med(streamed, "rps"), 1),
        "api.paced_offered_rps": round(rate, 1),
        "api.paced_metered_rps": round(med(paced_metered, "rps"), 1),
        "api.paced_unmetered_rps": round(med(paced_unmetered, "rps"), 1),
        "api.paced_p50_added_ms": round(med(paced_metered, "p50_ms") - med(paced_unmetered, "p50_ms"), 3),
        "api.paced_p99_added_ms": round(med(paced_metered, "p99_ms") - med(paced_unmetered, "p99_ms"), 3),
        "api.paced_metered_p99_ms": med(paced_metered, "p99_ms"),
        "api.paced_unmetered_p99_ms": med(paced_unmetered, "p99_ms"),
        "api.non_2xx": sum(r["non_2xx"] for r in metered + unmetered + streamed + paced_metered + paced_unmetered),
    }
