"""What one call meters: normalised usage, and the quantity it adds to each meter.

The pipeline computes the same quantities in SQL (dbt_project/models/staging); both follow these rules:
- tokens: input + output tokens of a chat call (cached input and reasoning output are inside those);
- requests: 1 for a chat call that reached the model (some tokens counted), else 0;
- embedding_tokens: the tokens of an embedding call;
- credits: the event's credits, fixed by the catalog before the call.
A rejected call meters nothing.
"""

from dataclasses import dataclass
from decimal import Decimal


@dataclass(slots=True)
class Usage:
    """Token usage normalised at the edge: input includes cached and cache-write tokens, output includes
    reasoning tokens, whatever the provider's own convention."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: int = 0
    embedding_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.tool_calls + other.tool_calls,
            self.embedding_tokens + other.embedding_tokens,
            self.estimated or other.estimated,
        )


def quantities(kind: str, status: str, usage: Usage, credits: Decimal) -> dict[str, int | Decimal]:
    """The amount an event adds to each meter: integers, but for credits."""
    if status == "rejected":
        return {}
    out: dict[str, int | Decimal] = {}
    if kind == "chat":
        tokens = usage.input_tokens + usage.output_tokens
        if tokens:
            out["tokens"] = tokens
            out["requests"] = 1
    elif kind == "embedding" and usage.embedding_tokens:
        out["embedding_tokens"] = usage.embedding_tokens
    if credits:
        out["credits"] = credits
    return out
