"""Where an API request's time goes, without HTTP or wrk: the app driven in-process over ASGI by 32 concurrent
clients, CPU of the event-loop thread per request, metered vs unmetered, alternating rounds.

    python -m benchmarks.inprocess [--requests 10000] [--rounds 5] [--profile out.prof]

With --profile, the first metered round runs under cProfile (read it with `python -m pstats out.prof`). The
event-loop thread is what saturates under load, so its CPU per request is what bounds throughput; the WAL's
writer process and the roll thread are left out (they mostly wait on the disk or run outside the GIL).
"""

import argparse
import asyncio
import cProfile
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.api import BENCH_PLAN, BODY
from chatmeter.catalog import SHIPPED_CATALOG
from chatmeter.settings import Settings

CONCURRENCY = 32
ROUTES = ("/bench/unmetered", "/v1/chat/completions")


class InProcessApp:
    """The app with its lifespan started, and a tenant on the bench plan."""

    def __init__(self, data_dir: Path):
        catalog = data_dir / "catalog.toml"
        data_dir.mkdir(parents=True, exist_ok=True)
        catalog.write_text(SHIPPED_CATALOG.read_text() + BENCH_PLAN)
        self.settings = Settings(data_dir=data_dir / "data", catalog_path=catalog, bench_routes=True, _env_file=None)
        self.body = orjson.dumps(BODY)

    async def __aenter__(self):
        from serving.app import create_app

        self.app = create_app(self.settings)
        self._lifespan = asyncio.Queue()
        started = asyncio.Event()

        async def send(message):
            if message["type"] == "lifespan.startup.complete":
                started.set()

        await self._lifespan.put({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self.app(scope, self._lifespan.get, send))
        await started.wait()
        _, self.api_key, _ = self.app.state.runtime.store.create_tenant("bench", "bench")
        return self

    async def __aexit__(self, *exc):
        await self._lifespan.put({"type": "lifespan.shutdown"})
        await self._task

    async def request(self, path: str) -> int:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"authorization", b"Bearer " + self.api_key.encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        messages = [{"type": "http.request", "body": self.body, "more_body": False}]
        status = []

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never disconnects

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, send)
        return status[0]

    async def round(self, path: str, requests: int) -> float:
        """Event-loop CPU per request, in µs."""
        per_client = requests // CONCURRENCY

        async def client():
            for _ in range(per_client):
                if (status := await self.request(path)) != 200:
                    raise RuntimeError(f"{path} answered {status}")

        began = time.thread_time()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return (time.thread_time() - began) / (per_client * CONCURRENCY) * 1e6


async def measure(requests: int, rounds: int, profile: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        async with InProcessApp(Path(tmp)) as app:
            for path in ROUTES:  # warm-up
                await app.round(path, 2000)
            cpu: dict[str, list[float]] = {path: [] for path in ROUTES}
            for r in range(rounds):
                for path in ROUTES:
                    profiler = cProfile.Profile() if profile and r == 0 and path == ROUTES[1] else None
                    if profiler:
                        profiler.enable()
                    cpu[path].append(await app.round(path, requests))
                    if profiler:
                        profiler.disable()
                        profiler.dump_stats(profile)
    unmetered, metered = (statistics.median(cpu[path]) for path in ROUTES)
    return {
        "inprocess.unmetered_cpu_us": round(unmetered, 1),
        "inprocess.metered_cpu_us": round(metered, 1),
        "inprocess.metering_cpu_us": round(metered - unmetered, 1),
        "inprocess.rounds": rounds,
    }


def bench_inprocess(requests: int = 10_000, rounds: int = 5, profile: Path | None = None) -> dict:
    import uvloop  # as the server runs

    return uvloop.run(measure(requests, rounds, profile))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(bench_inprocess(args.requests, args.rounds, args.profile), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
