from decimal import Decimal

from chatmeter.catalog import SHIPPED_CATALOG, load_catalog
from chatmeter.metering import Usage, quantities
from chatmeter.pricing import can_price, provider_cost

CATALOG = load_catalog(SHIPPED_CATALOG)


def test_cached_tokens_are_priced_as_the_provider_does():
    full = provider_cost(CATALOG, "gpt-4o-mini", Usage(input_tokens=1_000_000))
    cached = provider_cost(CATALOG, "gpt-4o-mini", Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000))
    assert full == Decimal("0.15")
    assert cached == Decimal("0.075")


def test_anthropic_cache_writes_cost_more_than_input():
    plain = provider_cost(CATALOG, "claude-sonnet-4-5", Usage(input_tokens=1_000_000), "anthropic")
    written = provider_cost(
        CATALOG, "claude-sonnet-4-5", Usage(input_tokens=1_000_000, cache_write_tokens=1_000_000), "anthropic"
    )
    assert written > plain


def test_reasoning_tokens_are_output_tokens():
    with_reasoning = provider_cost(CATALOG, "o3-mini", Usage(input_tokens=0, output_tokens=1000, reasoning_tokens=800))
    without = provider_cost(CATALOG, "o3-mini", Usage(input_tokens=0, output_tokens=1000))
    assert with_reasoning == without > 0


def test_operator_prices_win_and_unknown_models_cannot_be_priced():
    assert can_price(CATALOG, "llama-3.1-8b-instruct")
    assert provider_cost(
        CATALOG, "llama-3.1-8b-instruct", Usage(input_tokens=2_000_000, output_tokens=1_000_000)
    ) == Decimal("0.2")
    assert not can_price(CATALOG, "no-such-model-anywhere")
    assert can_price(CATALOG, "text-embedding-3-small")


def test_meter_quantities():
    u = Usage(input_tokens=10, output_tokens=5, embedding_tokens=0)
    assert quantities("chat", "ok", u, Decimal(1)) == {"tokens": 15, "requests": 1, "credits": 1}
    assert quantities("chat", "rejected", u, Decimal(1)) == {}
    assert quantities("chat", "error", Usage(), Decimal(0)) == {}
    assert quantities("embedding", "ok", Usage(input_tokens=7, embedding_tokens=7), Decimal("0.1")) == {
        "embedding_tokens": 7,
        "credits": Decimal("0.1"),
    }


def test_fast_path_equals_genai_prices_to_the_digit():
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price
    from hypothesis import given, settings
    from hypothesis import strategies as st

    models = [
        ("gpt-4o-mini", None),
        ("gpt-4o", None),
        ("claude-sonnet-4-5", "anthropic"),
        ("o3-mini", None),
        ("claude-3-5-haiku-latest", None),
        ("gemini-2.5-pro", None),
    ]

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(models),
        st.integers(0, 400_000),
        st.integers(0, 100),
        st.integers(0, 100),
        st.integers(0, 50_000),
    )
    def check(model_provider, input_tokens, cached_pct, written_pct, output_tokens):
        model, provider = model_provider
        cached = input_tokens * cached_pct // 100
        written = (input_tokens - cached) * written_pct // 100 if provider == "anthropic" else 0
        usage = Usage(
            input_tokens=input_tokens,
            cached_input_tokens=cached,
            cache_write_tokens=written,
            output_tokens=output_tokens,
        )
        ours = provider_cost(CATALOG, model, usage, provider)
        theirs = (
            calc_price(
                PriceUsage(
                    input_tokens=input_tokens,
                    cache_read_tokens=cached,
                    cache_write_tokens=written,
                    output_tokens=output_tokens,
                ),
                model,
                provider_id=provider,
            ).total_price
            if input_tokens or output_tokens
            else 0
        )
        assert ours == theirs

    check()
