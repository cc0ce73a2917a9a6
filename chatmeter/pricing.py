"""Provider cost of a call, in Decimal USD.

An operator's price in the catalog wins; otherwise the `genai-prices` package (offline data), which prices
cached and reasoning tokens as each provider does. A model neither can price is refused before the call,
so no call goes unmetered.
"""

from datetime import UTC, date, datetime, time
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


_TOKEN_PRICES = {"input_mtok", "cache_read_mtok", "cache_write_mtok", "output_mtok"}
# Prices of things a chat or embedding call here never uses.
_UNUSED = {"web_searches_kcount", "storage_searches_kcount", "code_executions_kcount"}


@lru_cache(maxsize=4096)
def _token_prices(model: str, owner: str | None, day: date) -> dict | None:
    """genai-prices' prices of `model` on `day`, when they are per token only (else None: use calc_price)."""
    result = calc_price(
        PriceUsage(input_tokens=1, output_tokens=1),
        model,
        provider_id=owner,
        genai_request_timestamp=datetime.combine(day, time(12), UTC),
    )
    prices = {k: v for k, v in vars(result.model_price).items() if not k.startswith("_") and v is not None}
    if set(prices) - _TOKEN_PRICES - _UNUSED:
        return None
    return prices


def _rate(price, total_input: int) -> Decimal | None:
    """The per-million price that applies; a tier's price covers all tokens once the input passes its start."""
    if price is None or isinstance(price, Decimal):
        return price
    rate = price.base
    for tier in price.tiers:
        if total_input > tier.start:
            rate = tier.price
    return rate


Rates = tuple[Decimal, Decimal, Decimal, Decimal]  # per million: input, cache read, cache write, output


def _rates(prices: dict, total_input: int) -> Rates:
    """The rates that apply to a call with `total_input` input tokens; cached tokens are priced as input
    where the model has no price of their own."""
    input_rate = _rate(prices.get("input_mtok"), total_input) or Decimal(0)
    read = _rate(prices.get("cache_read_mtok"), total_input)
    write = _rate(prices.get("cache_write_mtok"), total_input)
    return (
        input_rate,
        input_rate if read is None else read,
        input_rate if write is None else write,
        _rate(prices.get("output_mtok"), total_input) or Decimal(0),
    )


@lru_cache(maxsize=4096)
def _model_prices(model: str, provider: str | None, day: date) -> tuple[str | None, dict | None, Rates | None]:
    """`model`'s owner, its per-token prices on `day` (None: genai-prices must price it) and, when none of them is
    tiered (nearly every model), its rates: resolved once, so that pricing a call is four products (this runs on
    every request)."""
    owner = _owner(model, provider)
    prices = _token_prices(model, owner, day)
    if prices is None or any(not isinstance(prices.get(name), Decimal | None) for name in _TOKEN_PRICES):
        return owner, prices, None
    return owner, prices, _rates(prices, 0)


def provider_cost(
    catalog: Catalog, model: str, usage: Usage, provider: str | None = None, at: datetime | None = None
) -> Decimal:
    if usage.input_tokens == 0 and usage.output_tokens == 0:
        return Decimal(0)
    price = catalog.models.get(model)
    cached = usage.cached_input_tokens
    written = usage.cache_write_tokens
    fresh = usage.input_tokens - cached - written
    if price is not None:
        cost = fresh * price.input_mtok + usage.output_tokens * price.output_mtok
        cost += cached * (price.cache_read_mtok if price.cache_read_mtok is not None else price.input_mtok)
        cost += written * (price.cache_write_mtok if price.cache_write_mtok is not None else price.input_mtok)
        return cost / MTOK
    at = at or datetime.now(UTC)
    owner, prices, rates = _model_prices(model, provider, at.astimezone(UTC).date())
    if rates is None:
        if prices is None:
            priced = PriceUsage(
                input_tokens=usage.input_tokens,
                cache_read_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                output_tokens=usage.output_tokens,
            )
            return calc_price(priced, model, provider_id=owner, genai_request_timestamp=at).total_price
        rates = _rates(prices, usage.input_tokens)
    # The same arithmetic as genai-prices, without its per-call overhead.
    input_rate, read, write, output_rate = rates
    cost = fresh * input_rate + cached * read
    cost += written * write
    cost += usage.output_tokens * output_rate
    return cost / MTOK
