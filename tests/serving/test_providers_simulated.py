"""The simulated provider: deterministic answers, counted exactly (admission's zero overshoot rests on it)."""

import asyncio
import json
import math

import pytest

from serving.providers import make_provider
from serving.providers.base import ChatRequest, Completion, StreamDelta
from serving.providers.simulated import SimulatedProvider, message_tokens
from serving.providers.tokens import count_tokens

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def chat(text: str = "Hello there, how are you?", *, model: str = "gpt-4o", max_tokens: int = 1000, **kw):
    return ChatRequest(model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, **kw)


def complete(request: ChatRequest, provider: SimulatedProvider | None = None) -> Completion:
    return asyncio.run((provider or SimulatedProvider()).complete(request))


def stream(request: ChatRequest, provider: SimulatedProvider | None = None) -> list[StreamDelta]:
    async def collect() -> list[StreamDelta]:
        return [delta async for delta in (provider or SimulatedProvider()).stream(request)]

    return asyncio.run(collect())


def test_make_provider_by_name():
    assert make_provider("simulated").name == "simulated"
    assert make_provider("openai").name == "openai"
    assert make_provider("anthropic").name == "anthropic"
    with pytest.raises(ValueError, match="unknown provider"):
        make_provider("gemini")


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("Hello, world!", 4), ("don't stop", 4), ("  spaced   out  ", 2), ("naïve café 42", 3)],
)
def test_count_tokens_is_words_and_punctuation(text, tokens):
    assert count_tokens(text) == tokens


def test_input_tokens_follow_the_formula():
    request = ChatRequest(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "Be brief."},  # 4 + 3
            {"role": "user", "content": "Hi there!", "name": "bob"},  # 4 + 3 + 1
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },  # 4 + 1 + 2
            {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},  # 4 + 3
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            },  # 4 + 4 + 85
        ],
        max_tokens=10,
        tools=[TIME_TOOL],
    )
    expected = 3 + 7 + 8 + 7 + 7 + 93 + count_tokens(json.dumps([TIME_TOOL]))
    provider = SimulatedProvider()
    assert provider.input_token_bound(request) == expected
    assert complete(request, provider).usage.input_tokens == expected


def test_answers_are_deterministic_and_differ_by_request():
    first, again = complete(chat("Tell me about tokens")), complete(chat("Tell me about tokens"))
    other = complete(chat("Tell me about invoices"))
    assert first == again
    assert first.content != other.content
    assert complete(chat("Tell me about tokens", model="gpt-4o-mini")).content != first.content


@pytest.mark.parametrize("max_tokens", [1, 3, 19, 50, 150, 10_000])
def test_output_is_counted_exactly_and_respects_max_tokens(max_tokens):
    for i in range(30):
        request = chat(f"Question number {i}: what does plan {i} include?", max_tokens=max_tokens)
        natural = complete(chat(request.messages[0]["content"], max_tokens=10_000))
        answer = complete(request)
        assert answer.usage.input_tokens == SimulatedProvider().input_token_bound(request)
        assert answer.usage.output_tokens == count_tokens(answer.content)
        assert 1 <= answer.usage.output_tokens <= max_tokens
        assert 20 <= natural.usage.output_tokens < 300
        assert answer.finish_reason == ("length" if natural.usage.output_tokens > max_tokens else "stop")
        assert natural.content.startswith(answer.content)


def test_stream_matches_complete():
    for i in range(10):
        request = chat(f"Stream this answer {i}", max_tokens=40 + i * 30)
        whole = complete(request)
        deltas = stream(request)
        assert "".join(d.content or "" for d in deltas) == whole.content
        assert all(count_tokens(d.content) <= 4 for d in deltas if d.content)
        assert deltas[-1] == StreamDelta(usage=whole.usage)
        assert deltas[-2].finish_reason == whole.finish_reason
        assert all(d.usage is None for d in deltas[:-1])


def test_tool_call_when_required():
    request = chat("Plan my trip", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required")
    answer = complete(request)
    assert answer.content is None
    assert answer.finish_reason == "tool_calls"
    [call] = answer.tool_calls
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "sample", "days": 1, "unit": "celsius"}
    expected = count_tokens("get_weather") + count_tokens(call["function"]["arguments"])
    assert answer.usage.output_tokens == expected
    assert answer.usage.tool_calls == 1
    assert answer.usage.input_tokens == SimulatedProvider().input_token_bound(request)


def test_tool_choice_by_name_and_by_mention():
    named = {"type": "function", "function": {"name": "get_time"}}
    assert (
        complete(chat("Anything", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=named)).tool_calls[0]["function"]["name"]
        == "get_time"
    )
    mentioned = complete(chat("Please call get_time now", tools=[WEATHER_TOOL, TIME_TOOL]))
    assert mentioned.tool_calls[0]["function"] == {"name": "get_time", "arguments": "{}"}
    assert complete(chat("What time is it?", tools=[WEATHER_TOOL, TIME_TOOL])).tool_calls == []
    assert complete(chat("call get_time", tools=[TIME_TOOL], tool_choice="none")).tool_calls == []


def test_answers_a_tool_result_with_text():
    request = ChatRequest(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "Weather? use get_weather"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees"},
        ],
        max_tokens=500,
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    answer = complete(request)
    assert answer.tool_calls == [] and answer.usage.tool_calls == 0
    assert count_tokens(answer.content) == answer.usage.output_tokens > 0


def test_a_tool_call_that_does_not_fit_becomes_truncated_text():
    answer = complete(chat("Plan", tools=[WEATHER_TOOL], tool_choice="required", max_tokens=5))
    assert answer.tool_calls == [] and answer.usage.tool_calls == 0
    assert answer.finish_reason == "length"
    assert answer.usage.output_tokens == count_tokens(answer.content) == 5


def test_streamed_tool_call():
    request = chat("Plan", tools=[WEATHER_TOOL], tool_choice="required")
    whole = complete(request)
    *pieces, finish, last = stream(request)
    assert pieces == []
    assert finish.finish_reason == "tool_calls"
    assert finish.tool_calls == [{"index": 0, **whole.tool_calls[0]}]
    assert last == StreamDelta(usage=whole.usage)


def test_reasoning_models_spend_reasoning_tokens_first():
    for model in ("o1", "o3-mini", "o4-mini"):
        answer = complete(chat("Think hard about billing", model=model, max_tokens=10_000))
        usage = answer.usage
        assert 16 <= usage.reasoning_tokens < 80
        assert usage.output_tokens == usage.reasoning_tokens + count_tokens(answer.content)
    small = complete(chat("Think hard about billing", model="o3-mini", max_tokens=40))
    assert small.usage.reasoning_tokens == 10  # max_tokens // 4
    assert small.usage.output_tokens == 40 and small.finish_reason == "length"
    assert count_tokens(small.content) == 30
    assert complete(chat("Think hard about billing", model="o3-mini", max_tokens=1)).usage.output_tokens == 1
    assert complete(chat("Think hard about billing")).usage.reasoning_tokens == 0


def test_cached_input_in_blocks_of_64_from_1024_prefix_tokens():
    history = [{"role": "user", "content": "word " * 600}, {"role": "assistant", "content": "ok " * 500}]
    request = ChatRequest(model="gpt-4o", messages=[*history, {"role": "user", "content": "And now?"}], max_tokens=50)
    prefix = 3 + sum(message_tokens(m) for m in history)
    assert prefix >= 1024
    usage = complete(request).usage
    assert usage.cached_input_tokens == prefix // 64 * 64
    assert usage.cached_input_tokens % 64 == 0 and usage.cached_input_tokens <= usage.input_tokens
    assert usage.cache_write_tokens == 0
    # A long last message alone is not a cached prefix.
    assert complete(chat("word " * 2000)).usage.cached_input_tokens == 0


def test_estimate_usage():
    request = chat("How much is the pro plan?", max_tokens=100)
    usage = SimulatedProvider().estimate_usage(request, "It costs 9.99 a month")
    assert usage.input_tokens == SimulatedProvider().input_token_bound(request)
    assert usage.output_tokens == 7
    assert usage.estimated


def test_embeddings_are_deterministic_unit_vectors():
    provider = SimulatedProvider()
    vectors, usage = asyncio.run(provider.embed("text-embedding-3-small", ["alpha beta", "gamma", "alpha beta"]))
    assert len(vectors) == 3 and all(len(v) == 64 for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert usage.embedding_tokens == usage.input_tokens == 5
    assert usage.output_tokens == 0 and not usage.estimated


def test_latency_is_slept_once_per_call(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("serving.providers.simulated.asyncio.sleep", fake_sleep)
    complete(chat(max_tokens=100))
    stream(chat(max_tokens=100))
    assert slept == []
    provider = SimulatedProvider(latency_ms=200)
    answer = complete(chat(max_tokens=100), provider)
    assert slept == [0.2]
    slept.clear()
    deltas = stream(chat(max_tokens=100), provider)
    assert "".join(d.content or "" for d in deltas) == answer.content
    assert len(slept) > 1 and math.isclose(sum(slept), 0.2)
