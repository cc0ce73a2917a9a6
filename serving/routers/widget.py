"""The embeddable widget: GET /widget.js and the /chat endpoints, authenticated by a publishable widget key
and its allowed origins. Answers may stream; each turn is metered like any API call (tool steps included)."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pyarrow.dataset as ds
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from chatmeter.ids import uuid7
from chatmeter.metering import Usage
from chatmeter.schemas import TRANSCRIPT_SCHEMA
from serving import metered
from serving.admission import Subject
from serving.deps import RuntimeDep
from serving.errors import ApiError
from serving.http import JSONResponse, dumps
from serving.metered import Call
from serving.providers.base import ChatRequest, ProviderError
from serving.routers.chat import transcript_rows, upstream_failure
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


async def widget_caller(
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
    turn = Turn(rt, call, messages)
    await turn.admit_first()  # a refusal is a real 429, before any stream starts
    if body.stream:
        return StreamingResponse(
            _stream_turn(rt, caller, turn, session, user_message), media_type="text/event-stream", headers=headers
        )
    answer, usage = await _complete_turn(rt, turn, session, user_message)
    return JSONResponse(
        {
            "session_id": session_id,
            "message": {"role": "assistant", "content": answer},
            "usage": _usage_json(usage),
            "meter": _meter(rt, caller, end_user),
        },
        headers=headers,
    )


def _usage_json(usage: Usage) -> dict:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "tool_calls": usage.tool_calls,
    }


class Turn:
    """One widget turn: model steps and the tools they call, up to MAX_STEPS, each step admitted before it
    runs and streamed as it comes. Its usage is the total of all steps, metered as one event."""

    def __init__(self, rt: Runtime, call: Call, messages: list[dict]):
        self.rt = rt
        self.call = call
        self.convo = list(messages)
        self.usage = Usage()
        self.answer = ""
        self._request: ChatRequest | None = None
        self._step_text: list[str] = []

    def _request_for(self, step: int) -> ChatRequest:
        return ChatRequest(
            model=self.call.model,
            messages=list(self.convo),
            max_tokens=WIDGET_MAX_TOKENS,
            tools=TOOLS if step < MAX_STEPS - 1 else None,
            user=self.call.subject.end_user_id or None,
        )

    async def _admit(self, request: ChatRequest) -> None:
        hold = await metered.admit(self.rt, self.call, self.rt.provider.input_token_bound(request), request.max_tokens)
        request.max_tokens = hold.max_tokens
        self._request = request

    async def admit_first(self) -> None:
        await self._admit(self._request_for(0))

    def usage_so_far(self) -> Usage:
        """What was used, counting a step cut short by what it delivered."""
        if self._request is None or not self._step_text:
            return self.usage
        return self.usage + self.rt.provider.estimate_usage(self._request, "".join(self._step_text))

    async def run(self) -> AsyncIterator[str]:
        for step in range(MAX_STEPS):
            if step:
                try:
                    await self._admit(self._request_for(step))
                except ApiError:
                    return  # a later step that does not fit ends the turn with what there is
            request = self._request
            self._step_text = []
            step_usage: Usage | None = None
            calls: dict[int, dict] = {}
            async with asyncio.timeout(self.rt.settings.request_timeout_s):
                async for delta in self.rt.provider.stream(request):
                    if delta.usage is not None:
                        step_usage = delta.usage
                        continue
                    if delta.content:
                        self._step_text.append(delta.content)
                        yield delta.content
                    for fragment in delta.tool_calls or ():
                        _merge_tool_call(calls, fragment)
            text = "".join(self._step_text)
            self.usage += step_usage or self.rt.provider.estimate_usage(request, text)
            self._step_text = []
            self._request = None
            if not calls:
                self.answer = text
                return
            tool_calls = [calls[i] for i in sorted(calls)]
            self.convo.append({"role": "assistant", "content": text or None, "tool_calls": tool_calls})
            for tool_call in tool_calls:
                fn = tool_call["function"]
                self.convo.append(
                    {"role": "tool", "tool_call_id": tool_call["id"], "content": run_tool(fn["name"], fn["arguments"])}
                )


def _merge_tool_call(calls: dict[int, dict], fragment: dict) -> None:
    """Assemble streamed tool-call fragments (OpenAI delta format) into whole calls."""
    index = fragment.get("index", 0)
    call = calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    call["id"] = fragment.get("id") or call["id"]
    fn = fragment.get("function") or {}
    call["function"]["name"] += fn.get("name") or ""
    call["function"]["arguments"] += fn.get("arguments") or ""


FALLBACK = "Sorry, I could not finish that."


async def _complete_turn(rt: Runtime, turn: Turn, session: Session, user_message: dict) -> tuple[str, Usage]:
    call = turn.call
    try:
        async for _ in turn.run():
            pass
    except (ProviderError, TimeoutError) as exc:
        error = upstream_failure(exc)
        await metered.settle(rt, call, turn.usage_so_far(), status="error", error_code=error.code)
        raise error from None
    except BaseException:
        call.release(rt)
        raise
    answer = turn.answer or FALLBACK
    await metered.settle(rt, call, turn.usage, transcripts=_transcripts(call, session, user_message, answer))
    _remember(session, user_message, answer, turn.usage)
    return answer, turn.usage


def _transcripts(call: Call, session: Session, user_message: dict, answer: str) -> list[dict]:
    return transcript_rows(call, [user_message], answer, len(session.messages))


def _remember(session: Session, user_message: dict, answer: str, usage: Usage) -> None:
    session.messages.append(user_message)
    session.messages.append({"role": "assistant", "content": answer})
    session.tokens_total += usage.total_tokens


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


async def _stream_turn(
    rt: Runtime, caller: WidgetCaller, turn: Turn, session: Session, user_message: dict
) -> AsyncIterator[bytes]:
    """Server-sent events: `delta` pieces as the model writes them, then `done` with usage and the meter
    (once the event is durable), or `error` with the envelope."""
    call = turn.call
    settled = False
    try:
        try:
            async for piece in turn.run():
                yield _event("delta", {"content": piece})
        except (ProviderError, TimeoutError) as exc:
            error = upstream_failure(exc)
            settled = True
            await metered.settle(rt, call, turn.usage_so_far(), status="error", error_code=error.code)
            yield _event("error", error.body())
            return
        answer = turn.answer or FALLBACK
        settled = True
        try:
            await metered.settle(rt, call, turn.usage, transcripts=_transcripts(call, session, user_message, answer))
        except ApiError as exc:
            yield _event("error", exc.body())
            return
        _remember(session, user_message, answer, turn.usage)
        yield _event(
            "done",
            {
                "session_id": session.session_id,
                "usage": _usage_json(turn.usage),
                "meter": _meter(rt, caller, session.end_user_id),
            },
        )
    finally:
        if not settled:  # the visitor went away mid-answer: meter what was delivered
            metered.settle_later(rt, call, turn.usage_so_far(), status="error", error_code="client_disconnected")


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
