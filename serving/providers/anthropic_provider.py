"""Anthropic's Messages API through the official SDK, behind chatmeter's OpenAI-format interface.

The SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL itself. Usage is normalised here: Anthropic's
input_tokens exclude cache reads and cache writes, chatmeter's input includes both.
"""

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import anthropic

from chatmeter.metering import Usage
from serving.providers import sdk_error
from serving.providers.base import ChatRequest, Completion, ProviderError, StreamDelta
from serving.providers.tokens import byte_bound, byte_estimate_usage, content_text, tool_calls_text

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def normalise_usage(usage: Any) -> Usage:
    cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
    cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
    details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input_tokens=(usage.input_tokens or 0) + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=usage.output_tokens or 0,
        reasoning_tokens=getattr(details, "thinking_tokens", None) or 0,
    )


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image or "")
    if url.startswith("data:"):
        # data:<media type>;base64,<data>
        header, _, data = url.partition(",")
        media_type = header[len("data:") :].split(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise ProviderError(f"anthropic cannot take a {kind!r} content part", status=400, retryable=False)
    return blocks


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def convert_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI-format messages as Anthropic's (system prompt, messages)."""
    system: list[str] = []
    converted: list[dict[str, Any]] = []
    previous_role = None
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(content_text(content))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id") or "",
                "content": content_text(content),
            }
            # Results of parallel calls answer one assistant turn: one user message holds them all.
            if previous_role == "tool":
                converted[-1]["content"].append(result)
            else:
                converted.append({"role": "user", "content": [result]})
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = content_text(content)
            if text:
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id") or "",
                        "name": function.get("name") or "",
                        "input": _tool_input(function.get("arguments") or ""),
                    }
                )
            if blocks:  # Anthropic refuses an empty assistant turn
                converted.append({"role": "assistant", "content": blocks})
        else:
            converted.append({"role": "user", "content": _user_content(content)})
        previous_role = role
    return "\n\n".join(part for part in system if part), converted


def convert_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for tool in tools:
        function = tool.get("function") or {}
        if not function.get("name"):
            continue
        spec = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        converted.append(spec)
    return converted


def convert_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice == "required":
        return {"type": "any"}
    if choice == "auto":
        return {"type": "auto"}
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        return {"type": "tool", "name": choice["function"]["name"]}
    return None


def _tool_call(block: Any) -> dict[str, Any]:
    return {
        "id": block.id,
        "type": "function",
        "function": {"name": block.name, "arguments": json.dumps(block.input)},
    }


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, timeout_s: float = 120.0, client: anthropic.AsyncAnthropic | None = None):
        self._timeout_s = timeout_s
        self._client = client

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        # Built at first use, so the provider can be configured before credentials are in place.
        if self._client is None:
            try:
                # No SDK retries: a failed call is chatmeter's to settle, refund or retry.
                self._client = anthropic.AsyncAnthropic(max_retries=0, timeout=self._timeout_s)
            except Exception as exc:
                raise ProviderError("anthropic client is not configured (ANTHROPIC_API_KEY)", retryable=False) from exc
        return self._client

    def input_token_bound(self, request: ChatRequest) -> int:
        return byte_bound(request)

    def estimate_usage(self, request: ChatRequest, delivered: str) -> Usage:
        return byte_estimate_usage(request, delivered)

    def _create_args(self, request: ChatRequest) -> dict[str, Any]:
        system, messages = convert_messages(request.messages)
        args: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
        }
        if system:
            args["system"] = system
        if request.tools and request.tool_choice != "none":
            args["tools"] = convert_tools(request.tools)
            choice = convert_tool_choice(request.tool_choice)
            if choice:
                args["tool_choice"] = choice
        if request.stop:
            args["stop_sequences"] = request.stop
        if request.user:
            args["metadata"] = {"user_id": request.user}
        # The SDK no longer has sampling arguments, the API still takes them; it refuses both at once.
        if request.temperature is not None:
            args["extra_body"] = {"temperature": request.temperature}
        elif request.top_p is not None:
            args["extra_body"] = {"top_p": request.top_p}
        return args

    async def complete(self, request: ChatRequest) -> Completion:
        args = self._create_args(request)
        try:
            message = await self.client.messages.create(**args)
        except Exception as exc:
            raise sdk_error(self.name, exc, anthropic) from exc
        blocks = getattr(message, "content", None) or []
        text = "".join(block.text for block in blocks if block.type == "text")
        tool_calls = [_tool_call(block) for block in blocks if block.type == "tool_use"]
        raw_usage = getattr(message, "usage", None)
        if raw_usage is not None:
            usage = normalise_usage(raw_usage)
        else:
            usage = self.estimate_usage(request, text + tool_calls_text(tool_calls))
        usage.tool_calls = len(tool_calls)
        return Completion(
            content=None if tool_calls and not text else text,
            tool_calls=tool_calls,
            finish_reason=FINISH_REASONS.get(getattr(message, "stop_reason", None) or "", "stop"),
            usage=usage,
            model=getattr(message, "model", None) or request.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        args = self._create_args(request)
        try:
            events = await self.client.messages.create(**args, stream=True)
        except Exception as exc:
            raise sdk_error(self.name, exc, anthropic) from exc
        delivered: list[str] = []
        tool_indexes: dict[int, int] = {}  # content block index -> OpenAI tool call index
        start_usage = final_usage = None
        finish_reason: str | None = None
        try:
            async for event in events:
                if event.type == "message_start":
                    start_usage = getattr(event.message, "usage", None)
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    block = event.content_block
                    tool_indexes[event.index] = len(tool_indexes)
                    delivered.append(block.name)
                    call = {"index": tool_indexes[event.index], **_tool_call(block)}
                    call["function"]["arguments"] = ""  # the input arrives as input_json_delta
                    yield StreamDelta(tool_calls=[call])
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    delivered.append(event.delta.text)
                    yield StreamDelta(content=event.delta.text)
                elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    delivered.append(event.delta.partial_json)
                    index = tool_indexes.get(event.index, 0)
                    yield StreamDelta(
                        tool_calls=[{"index": index, "function": {"arguments": event.delta.partial_json}}]
                    )
                elif event.type == "message_delta":
                    final_usage = getattr(event, "usage", None)
                    if event.delta.stop_reason:
                        finish_reason = FINISH_REASONS.get(event.delta.stop_reason, "stop")
                        yield StreamDelta(finish_reason=finish_reason)
        except Exception as exc:
            raise sdk_error(self.name, exc, anthropic) from exc
        finally:
            await events.close()
        if finish_reason is None:
            # The stream ended without an answer's end: the caller settles on estimate_usage(delivered).
            raise ProviderError("anthropic stream ended before the answer did")
        usage = _stream_usage(start_usage, final_usage)
        if usage is None:
            usage = self.estimate_usage(request, "".join(delivered))
        usage.tool_calls = len(tool_indexes)
        yield StreamDelta(usage=usage)

    async def embed(self, model: str, inputs: list[str]) -> tuple[list[list[float]], Usage]:
        raise ProviderError("anthropic has no embeddings API", status=400, retryable=False)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _stream_usage(start: Any, final: Any) -> Usage | None:
    """A stream's usage: output from message_delta (cumulative); input from message_delta where its
    cumulative counts carry it, else from message_start. None when a half is missing."""
    if final is None or getattr(final, "output_tokens", None) is None:
        return None

    def latest(field: str) -> int | None:
        value = getattr(final, field, None)
        return value if value is not None else getattr(start, field, None)

    if latest("input_tokens") is None:
        return None
    merged = SimpleNamespace(
        input_tokens=latest("input_tokens"),
        cache_read_input_tokens=latest("cache_read_input_tokens"),
        cache_creation_input_tokens=latest("cache_creation_input_tokens"),
        output_tokens=final.output_tokens,
        output_tokens_details=getattr(final, "output_tokens_details", None),
    )
    return normalise_usage(merged)
