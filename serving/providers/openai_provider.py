"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, xAI) through the official SDK.

The SDK reads OPENAI_API_KEY and OPENAI_BASE_URL itself. Usage is normalised here: prompt_tokens
already include cached tokens and completion_tokens include reasoning tokens, as chatmeter counts them.
"""

from collections.abc import AsyncIterator
from typing import Any

import openai

from chatmeter.metering import Usage
from serving.providers import sdk_error
from serving.providers.base import ChatRequest, Completion, ProviderError, StreamDelta
from serving.providers.tokens import (
    byte_bound,
    byte_estimate_usage,
    bytes_estimate,
    is_reasoning_model,
    tool_calls_text,
)


def normalise_usage(usage: Any) -> Usage:
    """OpenAI's CompletionUsage as chatmeter's Usage (same conventions: nothing to add up)."""
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        cached_input_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
        output_tokens=usage.completion_tokens or 0,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None) or 0,
    )


def _tool_call_dict(call: Any) -> dict[str, Any]:
    function = getattr(call, "function", None)
    return {
        "id": call.id,
        "type": "function",
        "function": {
            "name": getattr(function, "name", "") or "",
            "arguments": getattr(function, "arguments", "") or "",
        },
    }


class OpenAIProvider:
    name = "openai"

    def __init__(self, *, timeout_s: float = 120.0, client: openai.AsyncOpenAI | None = None):
        self._timeout_s = timeout_s
        self._client = client

    @property
    def client(self) -> openai.AsyncOpenAI:
        # Built at first use, so the provider can be configured before credentials are in place.
        if self._client is None:
            try:
                # No SDK retries: a failed call is chatmeter's to settle, refund or retry.
                self._client = openai.AsyncOpenAI(max_retries=0, timeout=self._timeout_s)
            except openai.OpenAIError as exc:
                raise ProviderError("openai client is not configured (OPENAI_API_KEY)", retryable=False) from exc
        return self._client

    def input_token_bound(self, request: ChatRequest) -> int:
        return byte_bound(request)

    def estimate_usage(self, request: ChatRequest, delivered: str) -> Usage:
        return byte_estimate_usage(request, delivered)

    def _create_args(self, request: ChatRequest) -> dict[str, Any]:
        args: dict[str, Any] = {"model": request.model, "messages": request.messages}
        # Reasoning models refuse max_tokens; max_completion_tokens caps reasoning and visible output.
        if is_reasoning_model(request.model):
            args["max_completion_tokens"] = request.max_tokens
        else:
            args["max_tokens"] = request.max_tokens
        optional = {
            "tools": request.tools,
            "tool_choice": request.tool_choice,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop,
            "user": request.user,
        }
        args.update({key: value for key, value in optional.items() if value is not None})
        return args

    async def complete(self, request: ChatRequest) -> Completion:
        try:
            response = await self.client.chat.completions.create(**self._create_args(request))
        except Exception as exc:
            raise sdk_error(self.name, exc, openai) from exc
        if not response.choices:
            raise ProviderError("openai returned no choices")
        choice = response.choices[0]
        content = choice.message.content
        tool_calls = [_tool_call_dict(call) for call in choice.message.tool_calls or ()]
        if response.usage is not None:
            usage = normalise_usage(response.usage)
        else:
            usage = self.estimate_usage(request, (content or "") + tool_calls_text(tool_calls))
        usage.tool_calls = len(tool_calls)
        return Completion(
            content=content,
            tool_calls=tool_calls,
            finish_reason=choice.finish_reason or "stop",
            usage=usage,
            model=response.model or request.model,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        args = self._create_args(request)
        try:
            chunks = await self.client.chat.completions.create(
                **args, stream=True, stream_options={"include_usage": True}
            )
        except Exception as exc:
            raise sdk_error(self.name, exc, openai) from exc
        delivered: list[str] = []
        tool_call_indexes: set[int] = set()
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = normalise_usage(chunk.usage)
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    tool_calls = None
                    if delta.tool_calls:
                        tool_calls = [call.model_dump(exclude_none=True) for call in delta.tool_calls]
                        for call in tool_calls:
                            tool_call_indexes.add(call.get("index", 0))
                            function = call.get("function") or {}
                            delivered.append(function.get("name", "") + function.get("arguments", ""))
                    if delta.content:
                        delivered.append(delta.content)
                    finish_reason = choice.finish_reason or finish_reason
                    if delta.content or tool_calls or choice.finish_reason:
                        yield StreamDelta(
                            content=delta.content or None,
                            tool_calls=tool_calls,
                            finish_reason=choice.finish_reason,
                        )
        except Exception as exc:
            raise sdk_error(self.name, exc, openai) from exc
        finally:
            await chunks.close()
        if finish_reason is None:
            # The stream ended without an answer's end: the caller settles on estimate_usage(delivered).
            raise ProviderError("openai stream ended before the answer did")
        if usage is None:
            usage = self.estimate_usage(request, "".join(delivered))
        usage.tool_calls = len(tool_call_indexes)
        yield StreamDelta(usage=usage)

    async def embed(self, model: str, inputs: list[str]) -> tuple[list[list[float]], Usage]:
        try:
            # Floats, not the SDK's default base64: not every compatible server speaks base64.
            response = await self.client.embeddings.create(model=model, input=inputs, encoding_format="float")
        except Exception as exc:
            raise sdk_error(self.name, exc, openai) from exc
        vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
        if response.usage is not None and response.usage.prompt_tokens is not None:
            usage = Usage(input_tokens=response.usage.prompt_tokens, embedding_tokens=response.usage.prompt_tokens)
        else:
            tokens = sum(bytes_estimate(text) for text in inputs)
            usage = Usage(input_tokens=tokens, embedding_tokens=tokens, estimated=True)
        return vectors, usage

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
