"""A double of OpenAI's API: POST /v1/chat/completions (JSON, or SSE ending with a usage chunk when
stream_options.include_usage, then `data: [DONE]`) and POST /v1/embeddings. Point the SDK at
`<url>/v1` (OPENAI_BASE_URL)."""

import base64
import hashlib
import json
import struct
import time
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

IMAGE_TOKENS = 765


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's tokens as OpenAI's chat format counts them, with `bpe_like_tokens` for text."""
    tokens = PROMPT_PRIMER_TOKENS
    for message in body.get("messages", []):
        tokens += PER_MESSAGE_TOKENS + bpe_like_tokens(message.get("role", ""))
        tokens += bpe_like_tokens(message.get("name") or "")
        content = message.get("content")
        if isinstance(content, str):
            tokens += bpe_like_tokens(content)
        for part in content if isinstance(content, list) else ():
            tokens += bpe_like_tokens(part.get("text", "")) if part.get("type") == "text" else IMAGE_TOKENS
        if message.get("tool_calls"):
            tokens += bpe_like_tokens(json.dumps(message["tool_calls"]))
    if body.get("tools"):
        tokens += bpe_like_tokens(json.dumps(body["tools"]))
    return tokens


def _error(status: int, key: str) -> JSONResponse:
    # Like OpenAI's own errors, echo part of the key: callers must not pass upstream messages on.
    body = {
        "error": {
            "message": f"The double failed on purpose (key {key[:8]}...{key[-4:]})",
            "type": "server_error" if status >= 500 else "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    return JSONResponse(body, status_code=status)


def _usage(behaviour: Behaviour, body: dict[str, Any], completion_tokens: int) -> dict[str, Any]:
    prompt = behaviour.prompt_tokens if behaviour.prompt_tokens is not None else prompt_tokens(body)
    completion = behaviour.completion_tokens
    if completion is None:
        completion = completion_tokens + behaviour.reasoning_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": behaviour.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": behaviour.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call(behaviour: Behaviour) -> dict[str, Any]:
    name, arguments = behaviour.tool_call or ("", {})
    encoded = json.dumps(arguments)
    return {
        "id": "call_" + hashlib.sha256((name + encoded).encode()).hexdigest()[:24],
        "type": "function",
        "function": {"name": name, "arguments": encoded},
    }


def make_app(behaviour: Behaviour | None = None) -> FastAPI:
    app = new_app("openai double", behaviour)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body, behaviour, failure = await begin(app, request, _error)
        if failure is not None:
            return failure
        completion_id = f"chatcmpl-double{len(app.state.requests)}"
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if behaviour.tool_call:
            call = _tool_call(behaviour)
            chunks: list[str] = []
            output_tokens = bpe_like_tokens(call["function"]["name"] + call["function"]["arguments"])
            finish_reason = "tool_calls"
        else:
            call = None
            chunks, output_tokens, cut = answer_pieces(behaviour.text, max_tokens, behaviour.words_per_chunk)
            finish_reason = "length" if cut else "stop"
        usage = _usage(behaviour, body, output_tokens)
        base = {"id": completion_id, "created": int(time.time()), "model": body["model"]}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _stream(request, behaviour, base, chunks, call, finish_reason, usage, include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": None if call else "".join(chunks)}
        if call:
            message["tool_calls"] = [call]
        payload = {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        }
        if not behaviour.omit_usage:
            payload["usage"] = usage
        return JSONResponse(payload)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body, behaviour, failure = await begin(app, request, _error)
        if failure is not None:
            return failure
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = []
        for index, text in enumerate(inputs):
            vector = [b / 255 for b in hashlib.sha256(text.encode()).digest()[:8]]
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        payload: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if not behaviour.omit_usage:
            tokens = sum(bpe_like_tokens(text) for text in inputs)
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(payload)

    return app


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


async def _stream(
    request: Request,
    behaviour: Behaviour,
    base: dict[str, Any],
    chunks: list[str],
    call: dict[str, Any] | None,
    finish_reason: str,
    usage: dict[str, Any],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        payload = {**base, "object": "chat.completion.chunk", "choices": [choice]}
        if include_usage:
            payload["usage"] = None  # as OpenAI does: every chunk but the last has a null usage
        return _sse(payload)

    yield chunk({"role": "assistant", "content": "" if call is None else None})
    if call:
        head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
        head["function"]["arguments"] = ""
        yield chunk({"tool_calls": [head]})
        arguments = call["function"]["arguments"]
        chunks = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
    for sent, text in enumerate(chunks):
        if behaviour.drop_after_chunks is not None and sent >= behaviour.drop_after_chunks:
            raise DroppedStream
        if sent == behaviour.hang_after_chunks:
            await hang(request, behaviour.hang_s)
        if call:
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
        else:
            yield chunk({"content": text})
    yield chunk({}, finish_reason)
    if include_usage and not behaviour.omit_usage:
        yield _sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    yield _sse("[DONE]")
