"""Test doubles of the model APIs: small FastAPI apps speaking the real wire protocols, so the official
SDKs (and a `chatmeter serve` in another process) can be pointed at them through their base URL.

    from tests.doubles import Behaviour, run_double
    from tests.doubles.openai_double import make_app

    app = make_app(Behaviour(text="Hi there.", cached_tokens=64))
    with run_double(app) as url:          # "http://127.0.0.1:<port>"
        ...                               # OPENAI_BASE_URL=url + "/v1", ANTHROPIC_BASE_URL=url
        app.state.behaviour = Behaviour(fail_status=500)   # change it between calls
        app.state.requests                # every request body received, in order, with its headers
"""

import asyncio
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

# Fake keys for the SDKs in tests: the doubles accept any key, and echo part of it in their errors.
OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"


@dataclass
class Behaviour:
    """How a double answers its next requests. Token counts left as None are counted from the request
    and the answer with `bpe_like_tokens`."""

    text: str = "Hello from the double. It answers every question the same way, politely."
    prompt_tokens: int | None = None  # the whole prompt, cached and cache-written tokens included
    completion_tokens: int | None = None  # the whole output, reasoning included
    cached_tokens: int = 0  # OpenAI: prompt_tokens_details.cached_tokens; Anthropic: cache reads
    cache_write_tokens: int = 0  # Anthropic: cache_creation_input_tokens
    reasoning_tokens: int = 0  # OpenAI: completion_tokens_details.reasoning_tokens
    omit_usage: bool = False  # like some OpenAI-compatible servers: no usage anywhere
    tool_call: tuple[str, dict[str, Any]] | None = None  # answer with a call of (function name, arguments)
    fail_status: int | None = None  # answer every request with this HTTP error
    hang_s: float = 0.0  # wait this long (or until the client gives up) before answering...
    hang_after_chunks: int | None = None  # ...or, when streaming, after this many content chunks
    drop_after_chunks: int | None = None  # streaming: cut the connection after this many content chunks
    words_per_chunk: int = 2


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    path: str = ""


_PRETOKEN_RE = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+")
PROMPT_PRIMER_TOKENS = 3
PER_MESSAGE_TOKENS = 4


def bpe_like_tokens(text: str) -> int:
    """A real-ish BPE count: GPT-style pre-tokens, about four ASCII bytes a token, and, pessimistically,
    one token per byte outside ASCII."""
    count = 0
    for piece in _PRETOKEN_RE.findall(text):
        size = len(piece.encode("utf-8"))
        count += math.ceil(size / 4) if piece.isascii() else size
    return count


def answer_pieces(text: str, max_tokens: int | None, words_per_chunk: int) -> tuple[list[str], int, bool]:
    """The answer cut to max_tokens under `bpe_like_tokens`, in chunks of a few words: (chunks, its
    tokens, whether it was cut)."""
    words = re.findall(r"\S+\s*", text)
    kept = len(words)
    if max_tokens is not None:
        while kept and bpe_like_tokens("".join(words[:kept])) > max_tokens:
            kept -= 1
    chunks = ["".join(words[i : min(i + words_per_chunk, kept)]) for i in range(0, kept, words_per_chunk)]
    return chunks, bpe_like_tokens("".join(words[:kept])), kept < len(words)


def api_key(request: Request) -> str:
    """The key a client sent, as `x-api-key` or as a bearer token (the SDKs use either)."""
    return request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")


async def hang(request: Request, seconds: float) -> None:
    """Hold the answer back until `seconds` pass or the client hangs up (so no test waits the full time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(0.02)


class DroppedStream(Exception):
    """Raised inside a streaming body: the server then aborts the connection mid-response."""


async def record(app: FastAPI, request: Request) -> dict[str, Any]:
    body = await request.json()
    app.state.requests.append(Received(body, dict(request.headers), request.url.path))
    return body


async def begin(app: FastAPI, request: Request, error) -> tuple[dict[str, Any], "Behaviour", Any]:
    """What every double does first: record the call, then hang or fail as the behaviour says. The third
    value is the response to send at once (an error built by `error(status, api_key)`), or None."""
    body = await record(app, request)
    behaviour: Behaviour = app.state.behaviour
    if behaviour.hang_s and behaviour.hang_after_chunks is None:
        await hang(request, behaviour.hang_s)
    if behaviour.fail_status:
        return body, behaviour, error(behaviour.fail_status, api_key(request))
    return body, behaviour, None


def new_app(title: str, behaviour: Behaviour | None) -> FastAPI:
    app = FastAPI(title=title)
    app.state.behaviour = behaviour or Behaviour()
    app.state.requests = []
    return app


@contextmanager
def run_double(app: FastAPI, *, lifespan: bool = False) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a background thread; yields its root URL.
    With `lifespan`, the app's start-up runs in the server's loop (chatmeter's own app, in-process)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on" if lifespan else "off", timeout_graceful_shutdown=2, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="double")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
