"""Token arithmetic shared by the providers: the simulated tokenizer and the byte bound for real models.

Admission holds `input_token_bound + max_tokens` before a call, so a bound here must never fall below
what the provider will count; an estimate (used only when a provider reports nothing) should be fair.
"""

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chatmeter.metering import Usage
from serving.providers.base import ChatRequest

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# OpenAI's chat format: 3 tokens prime the reply and about 4 frame each message.
REPLY_PRIMER_TOKENS = 3
PER_MESSAGE_TOKENS = 4
# OpenAI-compatible servers render their own chat templates (Llama 3 injects a dated system header of
# ~25 tokens), so the bound carries a fixed allowance on top; what it over-reserves returns at settle.
TEMPLATE_ALLOWANCE_TOKENS = 64
# With tools, Anthropic adds a tool-use system prompt (~350 tokens) and other servers wrap the schemas
# in instructions.
TOOLS_ALLOWANCE_TOKENS = 512
# A non-text part (image, audio, file) has no text to bound by bytes: a fixed allowance for the bound
# (above a 1024x1024 high-detail image on OpenAI, 765, and Anthropic's ~1,600 cap) and a typical size
# for the estimate.
NON_TEXT_PART_BOUND = 2000
NON_TEXT_PART_ESTIMATE = 765
# The simulated tokenizer prices a non-text part at a flat 85 tokens (OpenAI's low-detail image).
SIMULATED_NON_TEXT_PART_TOKENS = 85


# OpenAI's reasoning models: their output tokens include hidden reasoning, and they take
# max_completion_tokens rather than max_tokens.
REASONING_MODEL_PREFIXES = ("o1", "o3", "o4")


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_MODEL_PREFIXES)


def count_tokens(text: str) -> int:
    """The simulated tokenizer: one token per word and per punctuation character."""
    return len(_TOKEN_RE.findall(text))


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def split_content(content: Any) -> tuple[list[str], int]:
    """The texts of a message's content (a string, None or a list of OpenAI content parts) and the
    number of its non-text parts."""
    if content is None:
        return [], 0
    if isinstance(content, str):
        return [content], 0
    texts: list[str] = []
    other = 0
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("text") or ""))
        else:
            other += 1
    return texts, other


def content_text(content: Any) -> str:
    """The text of a message's content, its parts joined; non-text parts are left out."""
    return "".join(split_content(content)[0])


def iter_tool_calls(message: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(function name, arguments) of each tool call an assistant message carries."""
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        yield str(function.get("name") or ""), str(function.get("arguments") or "")


def tool_calls_text(tool_calls: list[dict[str, Any]]) -> str:
    """What OpenAI-format tool calls cost as output, for an estimate: their names and arguments."""
    return "".join(c["function"]["name"] + c["function"]["arguments"] for c in tool_calls)


@dataclass(slots=True)
class _RequestSize:
    text_bytes: int  # every text the provider will read: contents, roles, names, tool calls, tools
    messages: int
    non_text_parts: int


def _request_size(request: ChatRequest) -> _RequestSize:
    text_bytes = 0
    non_text = 0
    for message in request.messages:
        texts, other = split_content(message.get("content"))
        non_text += other
        text_bytes += sum(utf8_len(t) for t in texts)
        text_bytes += utf8_len(str(message.get("role") or "")) + utf8_len(str(message.get("name") or ""))
        text_bytes += utf8_len(str(message.get("tool_call_id") or ""))
        if message.get("tool_calls"):
            text_bytes += utf8_len(json.dumps(message["tool_calls"]))
    if request.tools:
        text_bytes += utf8_len(json.dumps(request.tools))
    return _RequestSize(text_bytes, len(request.messages), non_text)


def byte_bound(request: ChatRequest) -> int:
    """A true upper bound on a BPE model's input tokens without its tokenizer: a byte-level BPE token
    covers at least one UTF-8 byte, plus the template's own tokens."""
    size = _request_size(request)
    bound = (
        REPLY_PRIMER_TOKENS
        + TEMPLATE_ALLOWANCE_TOKENS
        + PER_MESSAGE_TOKENS * size.messages
        + size.text_bytes
        + NON_TEXT_PART_BOUND * size.non_text_parts
    )
    if request.tools:
        bound += TOOLS_ALLOWANCE_TOKENS
    return bound


def bytes_estimate(text: str) -> int:
    """A fair token count for English-like text: about four bytes a token."""
    return math.ceil(utf8_len(text) / 4)


def byte_estimate_usage(request: ChatRequest, delivered: str) -> Usage:
    """Usage when a real provider reported none. Capped by the bound and by max_tokens, so an estimate
    never meters more than admission held."""
    size = _request_size(request)
    input_tokens = (
        REPLY_PRIMER_TOKENS
        + PER_MESSAGE_TOKENS * size.messages
        + math.ceil(size.text_bytes / 4)
        + NON_TEXT_PART_ESTIMATE * size.non_text_parts
    )
    return Usage(
        input_tokens=min(input_tokens, byte_bound(request)),
        output_tokens=min(bytes_estimate(delivered), request.max_tokens),
        estimated=True,
    )
