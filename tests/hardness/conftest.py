"""Helpers of the hardness suite: the app served by uvicorn in this process (so a test can hang up
mid-stream and still look at the runtime), SSE parsing and the usage detail."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tests.serving.conftest import openai_api, openai_server  # noqa: F401  (the model API doubles)


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve `app` (lifespan on: the runtime starts in the server's loop) on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="chatmeter")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def sse_events(body: bytes | str) -> list[dict | str]:
    """The `data:` payloads of an SSE body, JSON decoded; `[DONE]` stays a string."""
    text = body.decode() if isinstance(body, bytes) else body
    out: list[dict | str] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def meter(state: dict, meter_name: str, window: str, scope: str) -> dict:
    """One (meter, window, scope) entry of a /v1/usage answer's detail."""
    found = [m for m in state["meters"] if (m["meter"], m["window"], m["scope"]) == (meter_name, window, scope)]
    assert len(found) == 1, f"no single {meter_name}/{window}/{scope} entry in {state['meters']}"
    return found[0]


def wait_for(predicate, timeout: float = 15.0) -> bool:
    """Poll `predicate` until it holds; bounded, and never part of an assertion about speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
