"""The simulated model: deterministic answers whose tokens it counts exactly, in microseconds.

It is the default provider (demo, tests, benchmarks). Its counts are exact, so admission's hold for a
simulated call is never below the usage it settles: the property the zero-overshoot tests rest on.
"""

import asyncio
import hashlib
import json
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chatmeter.metering import Usage
from serving.providers.base import ChatRequest, Completion, StreamDelta
from serving.providers.tokens import (
    PER_MESSAGE_TOKENS,
    REPLY_PRIMER_TOKENS,
    SIMULATED_NON_TEXT_PART_TOKENS,
    content_text,
    count_tokens,
    is_reasoning_model,
    iter_tool_calls,
    split_content,
)

CACHE_MIN_PREFIX_TOKENS = 1024  # like OpenAI prompt caching: prefixes from 1,024 tokens,
CACHE_BLOCK_TOKENS = 64  # cached in blocks of 64
STREAM_CHUNK_TOKENS = 4
EMBEDDING_DIMENSIONS = 64

_VOCABULARY = (
    "the a an of to and in on for with as at by from that this it is was are be can will would could "
    "usage meter token tokens limit plan tenant invoice window model answer question account billing "
    "month day request hold settle credit price cost value data report chat widget key team user "
    "simple clear short quick exact steady careful helpful useful happy ready open small large new "
    "check count send read write keep make show give take find help start stop reset track measure "
    "today soon later always often here there every each more less most first next last"
).split()


def _build_pieces(seed: int, size: int) -> tuple[str, ...]:
    """A fixed stream of one-token pieces: " word", or "." / "," glued to the word before. Any run of n
    pieces joined (first one's leading space dropped) is a text of exactly n tokens under
    count_tokens, because every boundary is a space or a punctuation character."""
    rng = random.Random(seed)
    pieces: list[str] = []
    capital = True
    while len(pieces) < size:
        word = rng.choice(_VOCABULARY)
        pieces.append(" " + (word.capitalize() if capital else word))
        capital = False
        if rng.random() < 0.12:
            period = rng.random() < 0.6
            pieces.append("." if period else ",")
            capital = period
    return tuple(pieces[:size])


_MAX_NATURAL_TOKENS = 20 + 279
_CORPUS_OFFSETS = 4096
_PIECES = _build_pieces(seed=1729, size=_CORPUS_OFFSETS + _MAX_NATURAL_TOKENS)


def message_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    if type(content) is str and len(message) == 2:  # {"role", "content"}: most messages, and every request counts
        return PER_MESSAGE_TOKENS + count_tokens(content)
    texts, non_text_parts = split_content(content)
    tokens = PER_MESSAGE_TOKENS + sum(count_tokens(t) for t in texts)
    tokens += SIMULATED_NON_TEXT_PART_TOKENS * non_text_parts
    tokens += count_tokens(str(message.get("name") or ""))
    for name, arguments in iter_tool_calls(message):
        tokens += count_tokens(name) + count_tokens(arguments)
    return tokens


def input_tokens(request: ChatRequest) -> int:
    """The input tokens of the request, counted once per request."""
    if request.counted_input_tokens is None:
        total = REPLY_PRIMER_TOKENS
        if request.tools:
            total += count_tokens(json.dumps(request.tools))
        request.counted_input_tokens = total + sum(message_tokens(message) for message in request.messages)
    return request.counted_input_tokens


def cached_input_tokens(request: ChatRequest, prompt_tokens: int) -> int:
    """What prompt caching would serve: the prefix (everything but the last message) in whole blocks, from
    CACHE_MIN_PREFIX_TOKENS."""
    if prompt_tokens < CACHE_MIN_PREFIX_TOKENS:  # the prefix is shorter still
        return 0
    prefix_tokens = prompt_tokens - message_tokens(request.messages[-1])
    if prefix_tokens < CACHE_MIN_PREFIX_TOKENS:
        return 0
    return prefix_tokens // CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS


def _sample_value(schema: dict[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return _sample_arguments(schema)
    return "sample"


def _sample_arguments(schema: dict[str, Any] | None) -> dict[str, Any]:
    # A caller's schema is not checked deeply: whatever is not an object schema samples as empty.
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    return {name: _sample_value(prop if isinstance(prop, dict) else {}) for name, prop in properties.items()}


def _chosen_function(request: ChatRequest) -> dict[str, Any] | None:
    """The function the simulated model calls, if any: only in answer to a user, when made to or when
    the user names it."""
    if not request.tools or not request.messages or request.messages[-1].get("role") != "user":
        return None
    functions = [t["function"] for t in request.tools if t.get("function") and t["function"].get("name")]
    choice = request.tool_choice
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((f for f in functions if f["name"] == wanted), None)
    if choice == "required":
        return functions[0]
    text = content_text(request.messages[-1].get("content"))
    return next((f for f in functions if f["name"] in text), None)


@dataclass(slots=True)
class _Answer:
    pieces: list[str]  # the visible text, one token per piece
    tool_call: dict[str, Any] | None
    finish_reason: str
    usage: Usage

    @property
    def content(self) -> str | None:
        return None if self.tool_call else "".join(self.pieces)


def _answer(request: ChatRequest) -> _Answer:
    """The whole answer to `request`, decided up front so complete() and stream() agree exactly."""
    prompt_tokens = input_tokens(request)
    digest = hashlib.sha256(
        (request.model + json.dumps(request.messages, sort_keys=True, default=str)).encode()
    ).digest()
    h = int.from_bytes(digest[:8], "big")
    reasoning = 0
    if is_reasoning_model(request.model):
        reasoning = min(request.max_tokens // 4, 16 + h % 64)
    budget = request.max_tokens - reasoning
    cached = cached_input_tokens(request, prompt_tokens)
    usage = Usage(input_tokens=prompt_tokens, cached_input_tokens=cached, reasoning_tokens=reasoning)

    function = _chosen_function(request)
    if function is not None:
        arguments = json.dumps(_sample_arguments(function.get("parameters")))
        call_tokens = count_tokens(function["name"]) + count_tokens(arguments)
        # A call that does not fit max_tokens cannot be cut short and stay valid JSON: answer in text.
        if call_tokens <= budget:
            usage.output_tokens = reasoning + call_tokens
            usage.tool_calls = 1
            call = {
                "id": "call_" + digest.hex()[:24],
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
            return _Answer([], call, "tool_calls", usage)

    natural = 20 + h % 280
    produced = max(0, min(natural, budget))
    start = (h >> 16) % _CORPUS_OFFSETS
    pieces = list(_PIECES[start : start + produced])
    if pieces:
        pieces[0] = pieces[0].lstrip(" ")
    usage.output_tokens = reasoning + produced
    return _Answer(pieces, None, "length" if natural > budget else "stop", usage)


def _unit_vector(text: str) -> list[float]:
    first = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [b - 127.5 for b in first + hashlib.sha256(first).digest()]  # 64 components, none zero
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


class SimulatedProvider:
    name = "simulated"

    def __init__(self, *, latency_ms: float = 0.0):
        self._latency_s = max(0.0, latency_ms) / 1000.0

    def input_token_bound(self, request: ChatRequest) -> int:
        return input_tokens(request)

    def estimate_usage(self, request: ChatRequest, delivered: str) -> Usage:
        return Usage(
            input_tokens=self.input_token_bound(request),
            output_tokens=min(count_tokens(delivered), request.max_tokens),
            estimated=True,
        )

    async def complete(self, request: ChatRequest) -> Completion:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        answer = _answer(request)
        return Completion(
            content=answer.content,
            tool_calls=[answer.tool_call] if answer.tool_call else [],
            finish_reason=answer.finish_reason,
            usage=answer.usage,
            model=request.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        answer = _answer(request)
        chunks = [
            "".join(answer.pieces[i : i + STREAM_CHUNK_TOKENS])
            for i in range(0, len(answer.pieces), STREAM_CHUNK_TOKENS)
        ]
        pause = self._latency_s / max(1, len(chunks))
        if answer.tool_call:
            if pause:
                await asyncio.sleep(pause)
            yield StreamDelta(tool_calls=[{"index": 0, **answer.tool_call}], finish_reason="tool_calls")
        else:
            for chunk in chunks:
                if pause:
                    await asyncio.sleep(pause)
                yield StreamDelta(content=chunk)
            if not chunks and pause:
                await asyncio.sleep(pause)
            yield StreamDelta(finish_reason=answer.finish_reason)
        yield StreamDelta(usage=answer.usage)

    async def embed(self, model: str, inputs: list[str]) -> tuple[list[list[float]], Usage]:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        tokens = sum(count_tokens(text) for text in inputs)
        return [_unit_vector(text) for text in inputs], Usage(input_tokens=tokens, embedding_tokens=tokens)

    async def aclose(self) -> None:
        return None
