"""The OpenAI and Anthropic providers through the official SDKs, against doubles of the real APIs."""

import asyncio
import math
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chatmeter.metering import Usage
from serving.providers import make_provider
from serving.providers.anthropic_provider import convert_messages
from serving.providers.base import ChatRequest, Provider, ProviderError, StreamDelta
from tests.doubles import ANTHROPIC_KEY, OPENAI_KEY, Behaviour, bpe_like_tokens

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_HISTORY = [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": "Sunny"},
    {"role": "tool", "tool_call_id": "call_b", "content": "Rain"},
]
TEXTS = [
    "Hello!",
    "How much does the enterprise plan cost, and when does my billing month reset?",
    "naïve café — déjà vu; 東京の天気は？ 🌧️☔ emoji and CJK cost more than a byte a token would suggest",
    "x" * 3000,
    "supercalifragilisticexpialidocious " * 40,
]


def chat(text: str = "Hello there", *, model: str = "gpt-4o", max_tokens: int = 200, **kw: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, **kw)


def call(name: str, use: Callable[[Provider], Awaitable[Any]], *, timeout_s: float = 10.0) -> Any:
    """Run `use` on a fresh provider in a fresh event loop, closing the provider's client in that loop."""

    async def main() -> Any:
        provider = make_provider(name, timeout_s=timeout_s)
        try:
            return await use(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def complete(name: str, request: ChatRequest, **kw: Any):
    return call(name, lambda p: p.complete(request), **kw)


def stream(name: str, request: ChatRequest, **kw: Any) -> list[StreamDelta]:
    async def collect(provider: Provider) -> list[StreamDelta]:
        return [delta async for delta in provider.stream(request)]

    return call(name, collect, **kw)


def partial_stream(name: str, request: ChatRequest, **kw: Any) -> tuple[str, ProviderError]:
    """The text a failing stream delivered before it failed, and its error."""

    async def collect(provider: Provider) -> tuple[str, ProviderError]:
        delivered = []
        with pytest.raises(ProviderError) as failure:
            async for delta in provider.stream(request):
                delivered.append(delta.content or "")
        return "".join(delivered), failure.value

    return call(name, collect, **kw)


def byte_per_token_count(request: ChatRequest) -> int:
    """The worst a byte-level BPE can do: a token for every byte of text, the chat format's tokens around."""
    count = 3
    for message in request.messages:
        content = message.get("content") or ""
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content]
        count += 4 + sum(len(text.encode()) for text in texts)
    return count


def assert_safe(error: ProviderError, key: str) -> None:
    assert key not in str(error) and key[-4:] not in str(error)


# --- OpenAI ---------------------------------------------------------------------------------------


def test_openai_usage_is_taken_as_is(openai_api):
    openai_api.state.behaviour = Behaviour(
        text="Plans are billed monthly.",
        prompt_tokens=1500,
        cached_tokens=1024,
        completion_tokens=120,
        reasoning_tokens=80,
    )
    answer = complete("openai", chat("How are plans billed?", max_tokens=300))
    assert answer.content == "Plans are billed monthly."
    assert answer.finish_reason == "stop" and answer.tool_calls == []
    # prompt_tokens already include cached tokens, completion_tokens include reasoning.
    assert answer.usage == Usage(input_tokens=1500, cached_input_tokens=1024, output_tokens=120, reasoning_tokens=80)
    [received] = openai_api.state.requests
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"  # read from OPENAI_API_KEY
    assert received.body["max_tokens"] == 300 and "max_completion_tokens" not in received.body
    assert received.body["messages"] == [{"role": "user", "content": "How are plans billed?"}]
    assert not {"tools", "tool_choice", "temperature", "top_p", "stop", "user", "stream"} & received.body.keys()


def test_openai_forwards_options_and_caps_reasoning_models(openai_api):
    request = chat(
        "Weather?",
        model="o3-mini",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        user="end-user-7",
    )
    complete("openai", request)
    body = openai_api.state.requests[0].body
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body
    assert body["tools"] == [WEATHER_TOOL] and body["tool_choice"] == "auto"
    assert (body["temperature"], body["top_p"], body["stop"], body["user"]) == (0.2, 0.9, ["END"], "end-user-7")


def test_openai_length_finish(openai_api):
    answer = complete("openai", chat(max_tokens=5))
    assert answer.finish_reason == "length"
    assert answer.usage.output_tokens <= 5
    assert Behaviour().text.startswith(answer.content)


def test_openai_stream_ends_with_usage(openai_api):
    openai_api.state.behaviour = Behaviour(prompt_tokens=2100, cached_tokens=2048, reasoning_tokens=5)
    deltas = stream("openai", chat())
    assert "".join(d.content or "" for d in deltas) == Behaviour().text
    assert sum(1 for d in deltas if d.content) > 3
    assert deltas[-2].finish_reason == "stop"
    usage = deltas[-1].usage
    assert usage is not None and deltas[-1].content is None
    assert (usage.input_tokens, usage.cached_input_tokens, usage.reasoning_tokens) == (2100, 2048, 5)
    assert usage.output_tokens == bpe_like_tokens(Behaviour().text) + 5 and not usage.estimated
    body = openai_api.state.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_openai_missing_usage_is_estimated(openai_api):
    text = "An answer from a server that reports no usage at all."
    openai_api.state.behaviour = Behaviour(text=text, omit_usage=True)
    request = chat("What is my usage?")
    for usage in (complete("openai", request).usage, stream("openai", request)[-1].usage):
        assert usage.estimated
        assert usage.output_tokens == math.ceil(len(text.encode()) / 4)
        assert 0 < usage.input_tokens <= make_provider("openai").input_token_bound(request)


def test_openai_tool_calls(openai_api):
    openai_api.state.behaviour = Behaviour(tool_call=("get_weather", {"city": "Paris"}))
    request = chat("Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required")
    answer = complete("openai", request)
    assert answer.content is None and answer.finish_reason == "tool_calls"
    [tool_call] = answer.tool_calls
    assert tool_call["id"].startswith("call_")
    assert tool_call == {
        "id": tool_call["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert answer.usage.tool_calls == 1

    deltas = stream("openai", request)
    pieces = [piece for d in deltas for piece in d.tool_calls or ()]
    assert {piece["index"] for piece in pieces} == {0}
    assert pieces[0]["id"] == tool_call["id"] and pieces[0]["function"]["name"] == "get_weather"
    assert "".join(p["function"].get("arguments", "") for p in pieces) == '{"city": "Paris"}'
    assert deltas[-2].finish_reason == "tool_calls"
    assert deltas[-1].usage.tool_calls == 1 and not deltas[-1].usage.estimated


@pytest.mark.parametrize(
    ("status", "ours", "retryable"), [(500, 502, True), (429, 502, True), (400, 400, False), (401, 502, False)]
)
def test_openai_http_errors(openai_api, status, ours, retryable):
    openai_api.state.behaviour = Behaviour(fail_status=status)
    with pytest.raises(ProviderError) as failure:
        complete("openai", chat())
    # The provider refusing the request itself is the caller's 400; its failing is our 502.
    assert failure.value.status == ours and failure.value.retryable is retryable
    assert str(status) in str(failure.value)
    assert_safe(failure.value, OPENAI_KEY)
    assert len(openai_api.state.requests) == 1  # max_retries=0: chatmeter decides about retries


def test_openai_timeouts(openai_api):
    openai_api.state.behaviour = Behaviour(hang_s=10)
    with pytest.raises(ProviderError) as failure:
        complete("openai", chat(), timeout_s=0.3)
    assert failure.value.status == 504 and failure.value.retryable
    # Stalled mid-stream: the read times out after the first chunks were delivered.
    openai_api.state.behaviour = Behaviour(hang_s=10, hang_after_chunks=2)
    delivered, error = partial_stream("openai", chat(), timeout_s=0.3)
    assert error.status == 504
    assert delivered and Behaviour().text.startswith(delivered)


def test_openai_dropped_stream(openai_api):
    openai_api.state.behaviour = Behaviour(drop_after_chunks=3)
    delivered, error = partial_stream("openai", chat())
    assert error.status == 502
    assert delivered == "Hello from the double. It answers "
    estimate = make_provider("openai").estimate_usage(chat(), delivered)
    assert estimate.estimated and estimate.output_tokens == math.ceil(len(delivered) / 4)


def test_openai_unreachable_and_unconfigured(openai_api, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")  # nothing listens there
    with pytest.raises(ProviderError) as failure:
        complete("openai", chat())
    assert failure.value.status == 502 and "connection" in str(failure.value)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ProviderError, match="not configured") as failure:
        complete("openai", chat())
    assert not failure.value.retryable


def test_openai_embeddings(openai_api):
    vectors, usage = call("openai", lambda p: p.embed("text-embedding-3-small", ["alpha beta", "gamma"]))
    assert len(vectors) == 2 and len(vectors[0]) == 8 and vectors[0] != vectors[1]
    expected = bpe_like_tokens("alpha beta") + bpe_like_tokens("gamma")
    assert usage == Usage(input_tokens=expected, embedding_tokens=expected)
    assert openai_api.state.requests[0].body["encoding_format"] == "float"
    openai_api.state.behaviour = Behaviour(omit_usage=True)
    _, usage = call("openai", lambda p: p.embed("text-embedding-3-small", ["alpha beta"]))
    assert usage.estimated and usage.embedding_tokens == math.ceil(len("alpha beta") / 4)


@pytest.mark.parametrize("text", TEXTS)
def test_openai_bound_is_never_below_the_count(openai_api, text):
    requests = [
        chat(text),
        ChatRequest(
            model="gpt-4o",
            messages=[*TOOL_HISTORY, {"role": "user", "content": text}],
            max_tokens=50,
            tools=[WEATHER_TOOL],
        ),
        ChatRequest(
            model="gpt-4o",
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                }
            ],
        ),
    ]
    for request in requests:
        counted = complete("openai", request).usage.input_tokens
        provider = make_provider("openai")
        bound = provider.input_token_bound(request)
        assert bound >= counted
        assert bound >= byte_per_token_count(request)
        estimate = provider.estimate_usage(request, "")
        assert estimate.input_tokens <= bound and estimate.estimated


# --- Anthropic ------------------------------------------------------------------------------------


def test_anthropic_usage_adds_cache_reads_and_writes(anthropic_api):
    anthropic_api.state.behaviour = Behaviour(
        text="Cached answer.", prompt_tokens=3000, cached_tokens=2048, cache_write_tokens=512, completion_tokens=99
    )
    answer = complete("anthropic", chat("Tell me again", model="claude-sonnet-4-5"))
    # The double reported input_tokens=440: Anthropic's input excludes the 2,048 read and 512 written.
    assert answer.usage == Usage(input_tokens=3000, cached_input_tokens=2048, cache_write_tokens=512, output_tokens=99)
    assert answer.content == "Cached answer." and answer.finish_reason == "stop"
    [received] = anthropic_api.state.requests
    assert ANTHROPIC_KEY in (received.headers.get("x-api-key"), received.headers.get("authorization", "")[7:])


def test_anthropic_request_conversion(anthropic_api):
    request = ChatRequest(
        model="claude-sonnet-4-5",
        messages=[*TOOL_HISTORY, {"role": "user", "content": "Thanks!"}],
        max_tokens=77,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0.5,
        stop=["END"],
        user="end-user-7",
    )
    complete("anthropic", request)
    body = anthropic_api.state.requests[0].body
    assert body["system"] == "You are a travel agent.\n\nAnswer in one line."
    assert body["max_tokens"] == 77 and body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "end-user-7"} and body["temperature"] == 0.5
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "call_b", "content": "Rain"},
            ],
        },
        {"role": "user", "content": "Thanks!"},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "sent_tools", "sent_choice"),
    [
        ("auto", True, {"type": "auto"}),
        (None, True, None),
        ({"type": "function", "function": {"name": "get_weather"}}, True, {"type": "tool", "name": "get_weather"}),
        ("none", False, None),
    ],
)
def test_anthropic_tool_choice(anthropic_api, tool_choice, sent_tools, sent_choice):
    complete("anthropic", chat("Weather?", model="claude-haiku-4-5", tools=[WEATHER_TOOL], tool_choice=tool_choice))
    body = anthropic_api.state.requests[0].body
    assert ("tools" in body) is sent_tools
    assert body.get("tool_choice") == sent_choice


def test_anthropic_image_parts():
    _, messages = convert_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ]
    )
    assert messages[0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    with pytest.raises(ProviderError) as failure:
        convert_messages([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])
    assert failure.value.status == 400 and not failure.value.retryable


def test_anthropic_tool_use_and_max_tokens(anthropic_api):
    anthropic_api.state.behaviour = Behaviour(tool_call=("get_weather", {"city": "Rome"}))
    request = chat("Weather in Rome?", model="claude-sonnet-4-5", tools=[WEATHER_TOOL])
    answer = complete("anthropic", request)
    assert answer.content is None and answer.finish_reason == "tool_calls"
    assert answer.tool_calls == [
        {
            "id": "toolu_double0001",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
        }
    ]
    assert answer.usage.tool_calls == 1

    deltas = stream("anthropic", request)
    pieces = [piece for d in deltas for piece in d.tool_calls or ()]
    assert pieces[0] == {
        "index": 0,
        "id": "toolu_double0002",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(p["function"]["arguments"] for p in pieces) == '{"city": "Rome"}'
    assert deltas[-2].finish_reason == "tool_calls" and deltas[-1].usage.tool_calls == 1

    anthropic_api.state.behaviour = Behaviour()
    cut = complete("anthropic", chat(model="claude-sonnet-4-5", max_tokens=4))
    assert cut.finish_reason == "length" and cut.usage.output_tokens <= 4


def test_anthropic_stream_usage_from_start_and_delta(anthropic_api):
    anthropic_api.state.behaviour = Behaviour(prompt_tokens=5000, cached_tokens=4096, cache_write_tokens=100)
    deltas = stream("anthropic", chat(model="claude-sonnet-4-5"))
    assert "".join(d.content or "" for d in deltas) == Behaviour().text
    assert deltas[-2].finish_reason == "stop"
    assert deltas[-1].usage == Usage(
        input_tokens=5000,
        cached_input_tokens=4096,
        cache_write_tokens=100,
        output_tokens=bpe_like_tokens(Behaviour().text),
    )
    assert anthropic_api.state.requests[0].body["stream"] is True


def test_anthropic_missing_usage_is_estimated(anthropic_api):
    text = "No usage here."
    anthropic_api.state.behaviour = Behaviour(text=text, omit_usage=True)
    request = chat(model="claude-sonnet-4-5")
    for usage in (complete("anthropic", request).usage, stream("anthropic", request)[-1].usage):
        assert usage.estimated and usage.output_tokens == math.ceil(len(text) / 4) and usage.input_tokens > 0


def test_anthropic_failures(anthropic_api):
    anthropic_api.state.behaviour = Behaviour(fail_status=529)
    with pytest.raises(ProviderError) as failure:
        complete("anthropic", chat(model="claude-sonnet-4-5"))
    assert failure.value.status == 502 and failure.value.retryable and "529" in str(failure.value)
    assert_safe(failure.value, ANTHROPIC_KEY)
    assert len(anthropic_api.state.requests) == 1

    anthropic_api.state.behaviour = Behaviour(hang_s=10)
    with pytest.raises(ProviderError) as failure:
        complete("anthropic", chat(model="claude-sonnet-4-5"), timeout_s=0.3)
    assert failure.value.status == 504

    anthropic_api.state.behaviour = Behaviour(drop_after_chunks=2)
    delivered, error = partial_stream("anthropic", chat(model="claude-sonnet-4-5"))
    assert error.status == 502 and delivered == "Hello from the double. "

    with pytest.raises(ProviderError) as failure:
        call("anthropic", lambda p: p.embed("any", ["text"]))
    assert failure.value.status == 400 and not failure.value.retryable


@pytest.mark.parametrize("text", TEXTS)
def test_anthropic_bound_is_never_below_the_count(anthropic_api, text):
    for request in (
        chat(text, model="claude-sonnet-4-5"),
        ChatRequest(
            model="claude-sonnet-4-5",
            messages=[*TOOL_HISTORY, {"role": "user", "content": text}],
            max_tokens=50,
            tools=[WEATHER_TOOL],
        ),
    ):
        counted = complete("anthropic", request).usage.input_tokens
        bound = make_provider("anthropic").input_token_bound(request)
        assert bound >= counted
        assert bound >= byte_per_token_count(request)
