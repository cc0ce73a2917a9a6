"""One interface for every model provider; usage is normalised here, at the edge."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatmeter.metering import Usage


class ProviderError(Exception):
    """The upstream model failed (timeout, connection, 5xx, bad answer). Nothing from it is trusted."""

    def __init__(self, message: str, *, status: int = 502, retryable: bool = True):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(slots=True)
class ChatRequest:
    """A chat call as chatmeter passes it upstream, in OpenAI's message format."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int  # already clamped by admission: the provider must not produce more output tokens
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    user: str | None = None
    # The input tokens, once a provider that counts them exactly (the simulated one) has counted them for
    # admission: the call itself then does not count them again.
    counted_input_tokens: int | None = None


@dataclass(slots=True)
class Completion:
    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI format
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""


@dataclass(slots=True)
class StreamDelta:
    """One piece of a streamed answer. The last delta of a stream carries `usage` (and no content)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI delta format, with "index"
    finish_reason: str | None = None
    usage: Usage | None = None


class Provider(Protocol):
    name: str

    def input_token_bound(self, request: ChatRequest) -> int:
        """Input tokens of `request`, never below what the provider will count (admission rests on it)."""
        ...

    def estimate_usage(self, request: ChatRequest, delivered: str) -> Usage:
        """Usage when the provider reported none (a dropped stream): a fair estimate, flagged estimated."""
        ...

    async def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """Always asks upstream for usage; when it gives none, the final delta's usage is estimated."""
        ...

    async def embed(self, model: str, inputs: list[str]) -> tuple[list[list[float]], Usage]: ...

    async def aclose(self) -> None: ...
