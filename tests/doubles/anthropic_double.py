"""A double of Anthropic's Messages API: POST /v1/messages, as JSON or as the SSE event sequence
message_start, content_block_start, ping, content_block_delta..., content_block_stop, message_delta,
message_stop. Point the SDK at `<url>` (ANTHROPIC_BASE_URL).

Usage follows Anthropic's convention: input_tokens exclude cache reads and cache writes. A behaviour's
`prompt_tokens` is the whole prompt, so input_tokens = prompt - cached - cache writes."""

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.doubles import (
    PER_MESSAGE_TOKENS,
    PROMPT_PRIMER_TOKENS,
    Behaviour,
    DroppedStream,
    answer_pieces,
    begin,
    bpe_like_tokens,
    hang,
    new_app,
)

IMAGE_TOKENS = 1600
TOOL_USE_SYSTEM_PROMPT_TOKENS = 346  # what Anthropic adds to the prompt when tools are given


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return bpe_like_tokens(block.get("text", ""))
    if kind == "tool_use":
        return bpe_like_tokens(block.get("name", "") + json.dumps(block.get("input", {})))
    if kind == "tool_result":
        return _content_tokens(block.get("content", ""))
    return IMAGE_TOKENS


def _content_tokens(content: str | list[dict[str, Any]]) -> int:
    if isinstance(content, str):
        return bpe_like_tokens(content)
    return sum(_block_tokens(block) for block in content)


def prompt_tokens(body: dict[str, Any]) -> int:
    """The whole prompt's tokens (cache reads and writes included), `bpe_like_tokens` for text."""
    tokens = PROMPT_PRIMER_TOKENS + _content_tokens(body.get("system") or "")
    for message in body.get("messages", []):
        tokens += PER_MESSAGE_TOKENS + _content_tokens(message.get("content", ""))
    if body.get("tools"):
        tokens += TOOL_USE_SYSTEM_PROMPT_TOKENS + bpe_like_tokens(json.dumps(body["tools"]))
    return tokens


def _error(status: int, key: str) -> JSONResponse:
    message = f"The double failed on purpose (key {key[:8]}...{key[-4:]})"
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)


def _usage(behaviour: Behaviour, body: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    prompt = behaviour.prompt_tokens if behaviour.prompt_tokens is not None else prompt_tokens(body)
    output = behaviour.completion_tokens if behaviour.completion_tokens is not None else output_tokens
    return {
        "input_tokens": max(0, prompt - behaviour.cached_tokens - behaviour.cache_write_tokens),
        "cache_creation_input_tokens": behaviour.cache_write_tokens,
        "cache_read_input_tokens": behaviour.cached_tokens,
        "output_tokens": output,
    }


def make_app(behaviour: Behaviour | None = None) -> FastAPI:
    app = new_app("anthropic double", behaviour)

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        body, behaviour, failure = await begin(app, request, _error)
        if failure is not None:
            return failure
        message_id = f"msg_double{len(app.state.requests):04d}"
        if behaviour.tool_call:
            name, arguments = behaviour.tool_call
            block = {"type": "tool_use", "id": f"toolu_double{len(app.state.requests):04d}", "name": name}
            chunks = [json.dumps(arguments)]
            output_tokens = bpe_like_tokens(name + chunks[0])
            stop_reason = "tool_use"
        else:
            block = {"type": "text"}
            chunks, output_tokens, cut = answer_pieces(behaviour.text, body["max_tokens"], behaviour.words_per_chunk)
            stop_reason = "max_tokens" if cut else "end_turn"
        usage = _usage(behaviour, body, output_tokens)
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if body.get("stream"):
            events = _stream(request, behaviour, message, block, chunks, stop_reason, usage)
            return StreamingResponse(events, media_type="text/event-stream")
        if behaviour.tool_call:
            content = {**block, "input": behaviour.tool_call[1]}
        else:
            content = {**block, "text": "".join(chunks)}
        payload = {**message, "content": [content], "stop_reason": stop_reason}
        if not behaviour.omit_usage:
            payload["usage"] = usage
        return JSONResponse(payload)

    return app


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()


async def _stream(
    request: Request,
    behaviour: Behaviour,
    message: dict[str, Any],
    block: dict[str, Any],
    chunks: list[str],
    stop_reason: str,
    usage: dict[str, Any],
) -> AsyncIterator[bytes]:
    if not behaviour.omit_usage:
        # message_start carries the input side; output_tokens here is a placeholder the API sends as 1.
        message = {**message, "usage": {**usage, "output_tokens": 1}}
    yield _event("message_start", {"message": message})
    tool = block["type"] == "tool_use"
    start = {**block, "input": {}} if tool else {**block, "text": ""}
    yield _event("content_block_start", {"index": 0, "content_block": start})
    yield _event("ping", {})
    for sent, text in enumerate(chunks):
        if behaviour.drop_after_chunks is not None and sent >= behaviour.drop_after_chunks:
            raise DroppedStream
        if sent == behaviour.hang_after_chunks:
            await hang(request, behaviour.hang_s)
        delta = {"type": "input_json_delta", "partial_json": text} if tool else {"type": "text_delta", "text": text}
        yield _event("content_block_delta", {"index": 0, "delta": delta})
    yield _event("content_block_stop", {"index": 0})
    final: dict[str, Any] = {"delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    if not behaviour.omit_usage:
        final["usage"] = {"output_tokens": usage["output_tokens"]}  # cumulative
    yield _event("message_delta", final)
    yield _event("message_stop", {})
