"""The model providers behind `serving.providers.base.Provider`; `make_provider` picks one by name."""

import logging
from types import ModuleType

from serving.providers.base import Provider as Provider
from serving.providers.base import ProviderError

logger = logging.getLogger(__name__)

PROVIDER_NAMES = ("simulated", "openai", "anthropic")
DEFAULT_TIMEOUT_S = 120.0  # the default request timeout: an upstream call never outlives its hold


def make_provider(name: str, *, simulated_latency_ms: float = 0.0, timeout_s: float = DEFAULT_TIMEOUT_S) -> Provider:
    """The provider called `name`. The SDK-backed ones read their `*_API_KEY` / `*_BASE_URL` variables
    when they first call out, so building one needs no credentials."""
    # Imported here so the simulated default never pays for importing the SDKs.
    if name == "simulated":
        from serving.providers.simulated import SimulatedProvider

        return SimulatedProvider(latency_ms=simulated_latency_ms)
    if name == "openai":
        from serving.providers.openai_provider import OpenAIProvider

        return OpenAIProvider(timeout_s=timeout_s)
    if name == "anthropic":
        from serving.providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider(timeout_s=timeout_s)
    raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")


def sdk_error(provider: str, exc: BaseException, sdk: ModuleType) -> ProviderError:
    """An SDK failure as a ProviderError. The message is ours, never the upstream's: an upstream error
    body can echo part of the API key."""
    if isinstance(exc, ProviderError):
        return exc
    import httpx2  # the SDKs' HTTP client; imported late like the SDKs themselves

    # Mid-stream, the SDKs let the HTTP client's own errors through unwrapped.
    if isinstance(exc, sdk.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        error = ProviderError(f"{provider} timed out", status=504)
    elif isinstance(exc, sdk.APIConnectionError | httpx2.TransportError):
        error = ProviderError(f"{provider} connection failed", status=502)
    elif isinstance(exc, sdk.APIStatusError):
        code = exc.status_code
        retryable = code in (408, 409, 429) or code >= 500
        # The provider refusing the request itself (an unknown model, a bad tool schema) is the caller's 400.
        status = 400 if code in (400, 404, 413, 422) else 502
        error = ProviderError(f"{provider} returned HTTP {code}", status=status, retryable=retryable)
    else:
        error = ProviderError(f"{provider} call failed ({type(exc).__name__})", status=502)
    logger.warning("%s call failed: %s (%s)", provider, error, type(exc).__name__)
    return error
