"""POST /v1/chat/completions and /v1/embeddings: the OpenAI wire format, metered."""

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response, StreamingResponse

from chatmeter.ids import uuid7
from chatmeter.metering import Usage
from chatmeter.windows import utcnow
from serving import metered, metrics
from serving.deps import CallerDep, RuntimeDep
from serving.errors import ApiError
from serving.http import JSONResponse, dumps
from serving.metered import Call
from serving.providers.base import ChatRequest, Completion, ProviderError
from serving.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])

MAX_TOKENS = 1_000_000
DEFAULT_MAX_TOKENS = 1024


def _function_of(item: dict[str, Any], strings: tuple[str, ...]) -> dict[str, Any]:
    """The `function` object of a tool call, tool or tool choice, checked where the providers read it:
    an object whose `strings` fields, when given, are strings. Bad shapes are a 422, not a crash."""
    function = item.get("function") or {}
    if not isinstance(function, dict) or any(not isinstance(function.get(k, ""), str) for k in strings):
        raise ValueError(f"`function` must be an object with string fields {', '.join(strings)}")
    return function


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _parts(cls, content: str | list[dict[str, Any]] | None):
        for part in content if isinstance(content, list) else ():
            image = part.get("image_url")
            if not isinstance(part.get("text", ""), str) or (
                isinstance(image, dict) and not isinstance(image.get("url", ""), str)
            ):
                raise ValueError("a content part's `text` and `image_url.url` must be strings")
        return content

    @field_validator("tool_calls")
    @classmethod
    def _tool_calls(cls, calls: list[dict[str, Any]] | None):
        for call in calls or ():
            _function_of(call, ("name", "arguments"))
        return calls


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; parameters chatmeter does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)

    @field_validator("tools")
    @classmethod
    def _tools(cls, tools: list[dict[str, Any]] | None):
        for tool in tools or ():
            if not isinstance(_function_of(tool, ("name",)).get("parameters") or {}, dict):
                raise ValueError("a tool's `parameters` must be a JSON Schema object")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, choice: str | dict[str, Any] | None):
        if isinstance(choice, dict):
            _function_of(choice, ("name",))
        return choice


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(min_length=1)
    user: str | None = Field(default=None, max_length=256)


def chat_request(body: ChatCompletionRequest) -> ChatRequest:
    """The call as it goes upstream, before admission clamps its max_tokens."""
    return ChatRequest(
        model=body.model,
        messages=[m.model_dump(exclude_none=True) for m in body.messages],
        max_tokens=body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS,
        tools=body.tools,
        tool_choice=body.tool_choice,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=[body.stop] if isinstance(body.stop, str) else body.stop,
        user=body.user,
    )


def usage_json(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_json(completion_id: str, created: int, model: str, completion: Completion) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": completion.content}
    if completion.tool_calls:
        message["tool_calls"] = completion.tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason, "logprobs": None}],
        "usage": usage_json(completion.usage),
    }


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def transcript_rows(call: Call, messages: list[dict], answer: str | None, start: int) -> list[dict]:
    """The turn this call added: the last incoming message and the answer (their ids come with the event's)."""
    rows = []
    if messages:
        last = messages[-1]
        rows.append((len(messages) - 1, last["role"], _text(last.get("content"))))
    if answer is not None:
        rows.append((len(messages), "assistant", answer))
    return [
        {
            "tenant_id": call.subject.tenant_id,
            "end_user_id": call.subject.end_user_id or None,
            "conversation_id": call.conversation_id,
            "context": call.context,
            "position": start + position,
            "role": role,
            "content": content,
        }
        for position, role, content in rows
    ]


def _request_hash(body: BaseModel) -> str:
    return hashlib.sha256(body.model_dump_json(exclude_none=True).encode()).hexdigest()


def _replay(rt: Runtime, tenant_id: str, key: str | None, request_hash: str) -> dict | None:
    if key is None:
        return None
    record = rt.idempotency.get((tenant_id, key))
    if record is None:
        if rt.in_flight.get((tenant_id, key), 0.0) > time.monotonic():
            raise ApiError(
                409, "a request with this Idempotency-Key is still in progress", code="idempotency_in_progress"
            )
        return None
    if record["request_hash"] != request_hash:
        raise ApiError(422, "this Idempotency-Key was used with a different request body", code="idempotency_mismatch")
    return record


# Optional headers, read directly: as FastAPI parameters they cost more than the rest of admission together.
CHAT_HEADERS = {"Idempotency-Key": 255, "x-conversation-id": 128}
_RAW_CHAT_HEADERS = {name.lower().encode("latin-1"): name for name in CHAT_HEADERS}
_HEADER_DOCS = {
    "Idempotency-Key": "A retried request with the same key is answered once and metered once (24 h).",
    "x-conversation-id": "Groups calls into one conversation in the transcripts.",
}


def optional_headers(http: Request) -> dict[str, str]:
    """The optional headers the request carries (the first of each), in one pass over its raw headers (ASGI
    gives their names in lower case) rather than a case-insensitive search per header."""
    found: dict[str, str] = {}
    for raw, value in http.scope["headers"]:
        name = _RAW_CHAT_HEADERS.get(raw)
        if name is not None and name not in found:
            if len(value) > CHAT_HEADERS[name]:  # latin-1: as many characters as bytes
                raise ApiError(422, f"header {name}: at most {CHAT_HEADERS[name]} characters", code="invalid_request")
            found[name] = value.decode("latin-1")
    return found


@router.post(
    "/v1/chat/completions",
    openapi_extra={
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": _HEADER_DOCS[name],
                "schema": {"type": "string", "maxLength": limit},
            }
            for name, limit in CHAT_HEADERS.items()
        ]
    },
)
async def chat_completions(body: ChatCompletionRequest, caller: CallerDep, rt: RuntimeDep, http: Request):
    optional = optional_headers(http)
    idempotency_key = optional.get("Idempotency-Key")
    conversation_id = optional.get("x-conversation-id")
    request_hash = _request_hash(body) if idempotency_key else ""
    record = _replay(rt, caller.tenant.tenant.tenant_id, idempotency_key, request_hash)
    if record is not None:
        metrics.REQUESTS.labels("chat", "replayed").inc()
        return _replayed(record, body.stream)
    metered.check_model(rt, body.model)
    # The id of the event this call settles as; the completion, and a conversation the caller did not name,
    # are named after it rather than given ids of their own.
    event_id = uuid7()
    call = Call(
        tenant=caller.tenant,
        subject=metered.Subject(caller.tenant.tenant.tenant_id, caller.api_key_id, body.user or ""),
        kind="chat",
        model=body.model,
        context="api",
        conversation_id=conversation_id or event_id,
        idempotency_key=idempotency_key,
    )
    request = chat_request(body)
    messages = request.messages
    requested = request.max_tokens
    input_bound = rt.provider.input_token_bound(request)
    idem_slot = (call.subject.tenant_id, idempotency_key) if idempotency_key else None
    if idem_slot:
        rt.in_flight[idem_slot] = time.monotonic() + rt.settings.request_timeout_s + 5
    try:
        hold = await metered.admit(rt, call, input_bound, requested)
    except ApiError:
        if idem_slot:
            rt.in_flight.pop(idem_slot, None)
        raise
    request.max_tokens = hold.max_tokens
    headers = {"x-chatmeter-max-tokens": str(hold.max_tokens)}
    if hold.clamped:
        headers["x-chatmeter-max-tokens-clamped"] = "true"
    completion_id = f"chatcmpl-{event_id.replace('-', '')}"
    created = int(time.time())
    if body.stream:
        stream = _stream(rt, call, request, event_id, completion_id, created, idem_slot, request_hash)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    try:
        try:
            completion = await complete(rt, request)
        except (ProviderError, TimeoutError) as exc:
            raise await _provider_failed(rt, call, exc) from None
        payload = completion_json(completion_id, created, body.model, completion)
        idem = _idempotency_record(call, idempotency_key, request_hash, payload)
        # Rendered while its data is fresh in the cache, sent once the event is durable.
        response = JSONResponse(payload, headers=headers)
        await metered.settle(
            rt,
            call,
            completion.usage,
            event_id=event_id,
            transcripts=transcript_rows(call, messages, completion.content, 0),
            idempotency=idem,
        )
        metrics.CHAT_LATENCY.observe(time.perf_counter() - call.started)
        return response
    finally:
        if idem_slot:
            rt.in_flight.pop(idem_slot, None)
        call.release(rt)


async def complete(rt: Runtime, request: ChatRequest) -> Completion:
    """The model's answer, within the request timeout."""
    async with asyncio.timeout(rt.settings.request_timeout_s):
        return await rt.provider.complete(request)


def _idempotency_record(call: Call, key: str | None, request_hash: str, payload: dict) -> dict | None:
    if key is None:
        return None
    return {
        "tenant_id": call.subject.tenant_id,
        "key": key,
        "request_hash": request_hash,
        "status_code": 200,
        "body": dumps(payload).decode(),
        "created_at": utcnow(),
    }


def upstream_failure(exc: Exception) -> ApiError:
    """What the client is told when the model failed: our timeout or the provider's is 504, the provider
    refusing the request is 400, anything else 502. The provider's own words are never passed on."""
    if isinstance(exc, TimeoutError) or getattr(exc, "status", None) == 504:
        return ApiError(504, "the model did not answer in time", code="upstream_timeout")
    if getattr(exc, "status", None) == 400:
        return ApiError(400, f"the model provider refused the request: {exc}", code="upstream_rejected")
    return ApiError(502, f"the model provider failed: {exc}", code="upstream_error")


async def _provider_failed(rt: Runtime, call: Call, exc: Exception) -> ApiError:
    """Release the hold, record the failed call (metering nothing), and say what happened."""
    error = upstream_failure(exc)
    await metered.settle(rt, call, Usage(), status="error", error_code=error.code)
    metrics.REQUESTS.labels("chat", error.code).inc()
    return error


def _replayed(record: dict, stream: bool) -> Response:
    headers = {"Idempotent-Replayed": "true"}
    if not stream:
        return Response(
            record["body"], status_code=record["status_code"], media_type="application/json", headers=headers
        )
    payload = orjson.loads(record["body"])
    choice = payload["choices"][0]

    async def replay() -> AsyncIterator[bytes]:
        base = {
            "id": payload["id"],
            "object": "chat.completion.chunk",
            "created": payload["created"],
            "model": payload["model"],
        }
        delta = {"role": "assistant", "content": choice["message"].get("content")}
        if choice["message"].get("tool_calls"):
            delta["tool_calls"] = [dict(tc, index=i) for i, tc in enumerate(choice["message"]["tool_calls"])]
        yield _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": choice["finish_reason"]}]})
        yield _sse({**base, "choices": [], "usage": payload["usage"]})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(replay(), media_type="text/event-stream", headers=headers)


def _sse(obj: dict) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


async def _stream(
    rt: Runtime,
    call: Call,
    request: ChatRequest,
    event_id: str,
    completion_id: str,
    created: int,
    idem_slot: tuple[str, str] | None,
    request_hash: str,
) -> AsyncIterator[bytes]:
    """SSE chunks as they come; the usage chunk and [DONE] only after the event is durable."""
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": request.model}
    delivered: list[str] = []
    tool_calls: list[dict] = []
    finish_reason = None
    usage: Usage | None = None
    settled = False
    try:
        yield _sse(
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )
        try:
            async with asyncio.timeout(rt.settings.request_timeout_s):
                async for delta in rt.provider.stream(request):
                    if delta.usage is not None:
                        usage = delta.usage
                        continue
                    piece: dict[str, Any] = {}
                    if delta.content:
                        piece["content"] = delta.content
                        delivered.append(delta.content)
                    if delta.tool_calls:
                        piece["tool_calls"] = delta.tool_calls
                        tool_calls.extend(delta.tool_calls)
                    if delta.finish_reason:
                        finish_reason = delta.finish_reason
                    yield _sse(
                        {**base, "choices": [{"index": 0, "delta": piece, "finish_reason": delta.finish_reason}]}
                    )
        except (ProviderError, TimeoutError) as exc:
            # Meter what was delivered; the hold goes back.
            code = upstream_failure(exc).code
            partial = rt.provider.estimate_usage(request, "".join(delivered)) if delivered else Usage()
            settled = True
            await metered.settle(
                rt,
                call,
                partial,
                event_id=event_id,
                status="error",
                error_code=code,
                transcripts=transcript_rows(call, request.messages, "".join(delivered), 0),
            )
            yield _sse({"error": {"type": "upstream_error", "code": code, "message": str(exc) or code}})
            yield b"data: [DONE]\n\n"
            return
        if usage is None:
            usage = rt.provider.estimate_usage(request, "".join(delivered))
        answer = "".join(delivered) if delivered or not tool_calls else None
        payload = completion_json(
            completion_id, created, request.model, Completion(answer, tool_calls, finish_reason or "stop", usage)
        )
        idem = _idempotency_record(call, idem_slot[1] if idem_slot else None, request_hash, payload)
        settled = True
        try:
            await metered.settle(
                rt,
                call,
                usage,
                event_id=event_id,
                transcripts=transcript_rows(call, request.messages, answer, 0),
                idempotency=idem,
            )
        except ApiError as exc:
            yield _sse(exc.body())
            return
        yield _sse({**base, "choices": [], "usage": usage_json(usage)})
        yield b"data: [DONE]\n\n"
    finally:
        if idem_slot:
            rt.in_flight.pop(idem_slot, None)
        if not settled:
            # The client went away mid-stream: meter only what was delivered, outside the cancelled task.
            partial = rt.provider.estimate_usage(request, "".join(delivered)) if delivered else Usage()
            metered.settle_later(
                rt,
                call,
                partial,
                event_id=event_id,
                status="error",
                error_code="client_disconnected",
                transcripts=transcript_rows(call, request.messages, "".join(delivered), 0),
            )


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, caller: CallerDep, rt: RuntimeDep):
    metered.check_model(rt, body.model)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    call = Call(
        tenant=caller.tenant,
        subject=metered.Subject(caller.tenant.tenant.tenant_id, caller.api_key_id, body.user or ""),
        kind="embedding",
        model=body.model,
        context="api",
    )
    bound = rt.provider.input_token_bound(
        ChatRequest(model=body.model, max_tokens=1, messages=[{"role": "user", "content": t} for t in inputs])
    )
    await metered.admit(rt, call, 0, 0, embedding_tokens=bound)
    try:
        try:
            async with asyncio.timeout(rt.settings.request_timeout_s):
                vectors, usage = await rt.provider.embed(body.model, inputs)
        except (ProviderError, TimeoutError) as exc:
            raise await _provider_failed(rt, call, exc) from None
        await metered.settle(rt, call, usage)
    finally:
        call.release(rt)
    return JSONResponse(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": body.model,
            "usage": {"prompt_tokens": usage.embedding_tokens, "total_tokens": usage.embedding_tokens},
        }
    )


bench_router = APIRouter(tags=["bench"], include_in_schema=False)


@bench_router.post("/bench/unmetered")
async def unmetered(body: ChatCompletionRequest, caller: CallerDep, rt: RuntimeDep):
    """The baseline of `make bench`: the same body, auth and model call, with no admission, log or settle."""
    completion = await complete(rt, chat_request(body))
    return JSONResponse(completion_json(f"chatcmpl-{uuid7()}", int(time.time()), body.model, completion))
