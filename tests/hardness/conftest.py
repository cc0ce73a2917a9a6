"""Helpers of the hardness suite: the app served by uvicorn in this process (so a test can hang up
mid-stream and still look at the runtime), SSE parsing and the usage detail."""

import json
from contextlib import AbstractContextManager

from fastapi import FastAPI

from tests.conftest import wait_for  # noqa: F401  (re-exported for the hardness tests)
from tests.doubles import run_double
from tests.serving.conftest import openai_api, openai_server  # noqa: F401  (the model API doubles)


def serve_in_thread(app: FastAPI) -> AbstractContextManager[str]:
    """Serve chatmeter's app in this process (lifespan on), so a test can hang up mid-stream and still look
    at the runtime."""
    return run_double(app, lifespan=True)


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
