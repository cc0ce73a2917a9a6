"""The embeddable widget: GET /widget.js and the /chat endpoints, authenticated by a publishable widget key
and its allowed origins. Answers may stream; each turn is metered like any API call (tool steps included)."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from chatmeter.ids import uuid7
from chatmeter.metering import Usage
from serving import metered
from serving.admission import Subject
from serving.deps import RuntimeDep
from serving.errors import ApiError
from serving.http import JSONResponse, dumps
from serving.metered import Call
from serving.providers.base import ChatRequest, ProviderError
from serving.routers.chat import transcript_rows
from serving.runtime import Runtime, TenantContext
from serving.sessions import Session
from serving.tools import TOOLS, run_tool
from serving.usage import usage_state

router = APIRouter(tags=["widget"])
WIDGET_JS = Path(__file__).resolve().parent.parent / "widget" / "widget.js"
MAX_STEPS = 3
WIDGET_MAX_TOKENS = 512


class WidgetMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=8000)
    session_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")
    user_id: str | None = Field(default=None, max_length=128)
    context: str = Field(default="support", max_length=64)
    stream: bool = False


class EndSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=128)


class WidgetCaller:
    def __init__(self, tenant: TenantContext, origin: str | None):
        self.tenant = tenant
        self.origin = origin


def widget_caller(
    request: Request, rt: RuntimeDep, x_widget_key: Annotated[str | None, Header(max_length=200)] = None
) -> WidgetCaller:
    if not x_widget_key:
        raise ApiError(401, "missing widget key: send the X-Widget-Key header", code="missing_widget_key")
    key = rt.widget_key(x_widget_key)
    if key is None:
        raise ApiError(401, "invalid or revoked widget key", code="invalid_widget_key")
    origin = request.headers.get("origin")
    if not key.allows(origin):
        raise ApiError(
            403, f"origin {origin or '(none)'} is not allowed for this widget key", code="origin_not_allowed"
        )
    tenant = rt.tenant_context(key.tenant_id)
    if tenant is None:
        raise ApiError(401, "invalid or revoked widget key", code="invalid_widget_key")
    return WidgetCaller(tenant, origin)


WidgetDep = Annotated[WidgetCaller, Depends(widget_caller)]


def _cors(origin: str | None) -> dict[str, str]:
    if not origin:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


@router.get("/widget.js", include_in_schema=False)
async def widget_js():
    return Response(
        WIDGET_JS.read_bytes(), media_type="application/javascript", headers={"Cache-Control": "public, max-age=300"}
    )


@router.options("/chat/{path:path}", include_in_schema=False)
async def preflight(request: Request, path: str):
    # The key is not sent on a preflight; the real request checks the origin against it.
    origin = request.headers.get("origin")
    return Response(
        status_code=204,
        headers={
            **_cors(origin),
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, X-Widget-Key",
            "Access-Control-Max-Age": "600",
        },
    )


def _meter(rt: Runtime, caller: WidgetCaller, end_user: str) -> dict:
    state = usage_state(rt.admission, caller.tenant, Subject(caller.tenant.tenant.tenant_id, "", end_user))
    keys = (
        "monthlyUsage",
        "monthlyLimit",
        "percentUsed",
        "remaining",
        "warningLevel",
        "resetDate",
        "daysUntilReset",
        "subscriptionTier",
    )
    return {k: state[k] for k in keys}


@router.post("/chat/message")
async def chat_message(body: WidgetMessage, caller: WidgetDep, rt: RuntimeDep):
    tenant = caller.tenant.tenant
    session_id = body.session_id or uuid7()
    existing = rt.sessions.get(tenant.tenant_id, session_id)
    if existing is not None and existing.ended:
        raise ApiError(409, "this session has ended; start a new one", code="session_ended")
    end_user = body.user_id or (existing.end_user_id if existing else "")
    session = rt.sessions.open(tenant.tenant_id, session_id, end_user, body.context)
    model = rt.catalog.default_model
    metered.check_model(rt, model)
    call = Call(
        tenant=caller.tenant,
        subject=Subject(tenant.tenant_id, "", end_user),
        kind="chat",
        model=model,
        context=f"widget:{body.context}",
        conversation_id=session_id,
    )
    system = {"role": "system", "content": f"You are the assistant of {tenant.name}. Be brief and helpful."}
    user_message = {"role": "user", "content": body.message}
    messages = [system, *session.window(), user_message]
    headers = _cors(caller.origin)
    if body.stream:
        return StreamingResponse(
            _stream_turn(rt, caller, call, session, messages, user_message),
            media_type="text/event-stream",
            headers=headers,
        )
    answer, usage = await _turn(rt, call, session, messages, user_message)
    return JSONResponse(
        {
            "session_id": session_id,
            "message": {"role": "assistant", "content": answer},
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
                "tool_calls": usage.tool_calls,
            },
            "meter": _meter(rt, caller, end_user),
        },
        headers=headers,
    )


async def _steps(rt: Runtime, call: Call, messages: list[dict]) -> AsyncIterator[tuple[str | None, Usage]]:
    """The model, and the tools it calls, up to MAX_STEPS; each step admitted before it runs."""
    convo = list(messages)
    for step in range(MAX_STEPS):
        request = ChatRequest(
            model=call.model,
            messages=convo,
            max_tokens=WIDGET_MAX_TOKENS,
            tools=TOOLS if step < MAX_STEPS - 1 else None,
            user=call.subject.end_user_id or None,
        )
        try:
            hold = await metered.admit(rt, call, rt.provider.input_token_bound(request), request.max_tokens)
        except ApiError:
            if step == 0:
                raise
            return  # later steps that do not fit end the turn with what there is
        request.max_tokens = hold.max_tokens
        async with asyncio.timeout(rt.settings.request_timeout_s):
            completion = await rt.provider.complete(request)
        yield completion.content, completion.usage
        if not completion.tool_calls:
            return
        convo.append({"role": "assistant", "content": completion.content, "tool_calls": completion.tool_calls})
        for tool_call in completion.tool_calls:
            fn = tool_call["function"]
            convo.append(
                {"role": "tool", "tool_call_id": tool_call["id"], "content": run_tool(fn["name"], fn["arguments"])}
            )


async def _turn(
    rt: Runtime, call: Call, session: Session, messages: list[dict], user_message: dict
) -> tuple[str, Usage]:
    total = Usage()
    answer = ""
    try:
        async for content, usage in _steps(rt, call, messages):
            total += usage
            answer = content or answer
    except (ProviderError, TimeoutError) as exc:
        code = "upstream_timeout" if isinstance(exc, TimeoutError) else "upstream_error"
        await metered.settle(rt, call, total, status="error", error_code=code)
        raise ApiError(
            504 if code == "upstream_timeout" else 502, "the assistant could not answer", code=code
        ) from None
    except BaseException:
        call.release(rt)
        raise
    answer = answer or "Sorry, I could not finish that."
    await metered.settle(rt, call, total, transcripts=_transcripts(call, session, user_message, answer))
    _remember(session, user_message, answer, total)
    return answer, total


def _transcripts(call: Call, session: Session, user_message: dict, answer: str) -> list[dict]:
    return transcript_rows(call, [user_message], answer, len(session.messages))


def _remember(session: Session, user_message: dict, answer: str, usage: Usage) -> None:
    session.messages.append(user_message)
    session.messages.append({"role": "assistant", "content": answer})
    session.tokens_total += usage.total_tokens


async def _stream_turn(
    rt: Runtime, caller: WidgetCaller, call: Call, session: Session, messages: list[dict], user_message: dict
) -> AsyncIterator[bytes]:
    """Server-sent events: `delta` pieces of the answer, then `done` with usage and the meter (after the
    event is durable), or `error` with the envelope."""
    try:
        answer, usage = await _turn(rt, call, session, messages, user_message)
    except ApiError as exc:
        yield b"event: error\ndata: " + dumps(exc.body()) + b"\n\n"
        return
    words = answer.split(" ")
    for i in range(0, len(words), 4):
        piece = " ".join(words[i : i + 4]) + (" " if i + 4 < len(words) else "")
        yield b"event: delta\ndata: " + dumps({"content": piece}) + b"\n\n"
    yield (
        b"event: done\ndata: "
        + dumps(
            {
                "session_id": session.session_id,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens,
                    "tool_calls": usage.tool_calls,
                },
                "meter": _meter(rt, caller, session.end_user_id),
            }
        )
        + b"\n\n"
    )


@router.get("/chat/history/{session_id}")
async def chat_history(session_id: str, caller: WidgetDep, rt: RuntimeDep):
    session = rt.sessions.get(caller.tenant.tenant.tenant_id, session_id)
    if session is None:
        messages = await asyncio.to_thread(_history_from_transcripts, rt, caller.tenant.tenant.tenant_id, session_id)
        if not messages:
            raise ApiError(404, f"no session {session_id!r}", code="session_not_found", headers=_cors(caller.origin))
    else:
        messages = session.messages
    return JSONResponse({"session_id": session_id, "messages": messages}, headers=_cors(caller.origin))


def _history_from_transcripts(rt: Runtime, tenant_id: str, session_id: str) -> list[dict]:
    import pyarrow.dataset as ds

    from chatmeter.schemas import TRANSCRIPT_SCHEMA

    root = rt.settings.transcripts_dir
    if not root.exists() or not any(root.rglob("*.parquet")):
        return []
    table = ds.dataset(root, format="parquet", partitioning="hive", schema=TRANSCRIPT_SCHEMA).to_table(
        columns=["message_id", "position", "role", "content", "occurred_at"],
        filter=(ds.field("tenant_id") == tenant_id) & (ds.field("conversation_id") == session_id),
    )
    rows = {r["message_id"]: r for r in table.to_pylist()}.values()
    return [
        {"role": r["role"], "content": r["content"]}
        for r in sorted(rows, key=lambda r: (r["position"], r["occurred_at"]))
    ]


@router.post("/chat/end")
async def chat_end(body: EndSession, caller: WidgetDep, rt: RuntimeDep):
    session = rt.sessions.get(caller.tenant.tenant.tenant_id, body.session_id)
    if session is None:
        raise ApiError(404, f"no session {body.session_id!r}", code="session_not_found", headers=_cors(caller.origin))
    session.ended = True
    return JSONResponse(
        {
            "session_id": session.session_id,
            "ended": True,
            "message_count": len(session.messages),
            "tokens_total": session.tokens_total,
            "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        headers=_cors(caller.origin),
    )
