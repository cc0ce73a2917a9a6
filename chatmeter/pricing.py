"""Provider cost of a call, in Decimal USD.

An operator's price in the catalog wins; otherwise the `genai-prices` package (offline data), which prices
cached and reasoning tokens as each provider does. A model neither can price is refused before the call,
so no call goes unmetered.
"""

from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from chatmeter.catalog import Catalog
from chatmeter.metering import Usage

MTOK = Decimal(1_000_000)


_UNKNOWN = "?"
# Where genai-prices cannot tell a model's owner from its name alone, these are tried in turn.
_LIKELY_OWNERS = ("openai", "anthropic", "google", "mistral", "groq", "x-ai", "deepseek")


@lru_cache(maxsize=4096)
def _owner(model: str, provider: str | None) -> str | None:
    """The genai-prices provider id that prices `model` ("?" when none does)."""
    candidates = (provider,) if provider in ("openai", "anthropic") else (None, *_LIKELY_OWNERS)
    for candidate in candidates:
        try:
            result = calc_price(PriceUsage(input_tokens=1, output_tokens=1), model, provider_id=candidate)
        except LookupError:
            continue
        return result.provider.id
    return _UNKNOWN


def can_price(catalog: Catalog, model: str, provider: str | None = None) -> bool:
    return model in catalog.models or _owner(model, provider) != _UNKNOWN


def provider_cost(
    catalog: Catalog, model: str, usage: Usage, provider: str | None = None, at: datetime | None = None
) -> Decimal:
    if usage.input_tokens == 0 and usage.output_tokens == 0:
        return Decimal(0)
    price = catalog.models.get(model)
    if price is not None:
        cached = usage.cached_input_tokens
        written = usage.cache_write_tokens
        fresh = usage.input_tokens - cached - written
        cost = fresh * price.input_mtok + usage.output_tokens * price.output_mtok
        cost += cached * (price.cache_read_mtok if price.cache_read_mtok is not None else price.input_mtok)
        cost += written * (price.cache_write_mtok if price.cache_write_mtok is not None else price.input_mtok)
        return cost / MTOK
    result = calc_price(
        PriceUsage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
        ),
        model,
        provider_id=_owner(model, provider),
        genai_request_timestamp=at,
    )
    return result.total_price
