"""Tokens and their cost: prices per million tokens, and estimates made before anything is
sent (the dry run, :func:`memori_nb.chunking_stats`).

Backends that bill by token (an OpenAI-compatible server) report :class:`~memori_nb.models.Usage`
with each extraction; the engine adds it up per conversation and per run, and prices it with
the backend's ``pricing`` when it has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .models import Usage

# Characters per token: the usual rule of thumb for English text with BPE tokenizers
# (GPT-style); other languages and code take more tokens per character.
CHARS_PER_TOKEN = 4
# Completion tokens an extraction request is estimated to use: a fixed allowance per request,
# not a share of the prompt, because the answer (triples, facts, a summary of a few
# sentences) grows with the facts a chunk holds, not with its length: a 200-character chunk
# and a 200,000-character one both answer with at most a few dozen triples, and servers cap
# the answer anyway (``max_tokens``). 400 tokens is about 15 triples plus facts and summary.
COMPLETION_TOKENS_PER_REQUEST = 400


@dataclass(frozen=True, slots=True)
class Pricing:
    """Prices in US dollars per million tokens, as providers list them.

    Args:
        prompt_per_million: price of a million prompt (input) tokens.
        completion_per_million: price of a million completion (output) tokens.

    Raises:
        ConfigurationError: a price is not a number >= 0.

    Example:
        >>> Pricing(0.15, 0.60).cost(Usage(prompt_tokens=10_000, completion_tokens=2_000))
        0.0027
    """

    prompt_per_million: float
    completion_per_million: float

    def __post_init__(self) -> None:
        for name in ("prompt_per_million", "completion_per_million"):
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                raise ConfigurationError(f"Pricing.{name} must be a number >= 0 (US dollars "
                                         f"per million tokens), got {value!r}")

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs, in US dollars."""
        # Rounded well below a cent's fraction, so that 0.0027 does not print as 0.00270001.
        return round(self.price(usage.prompt_tokens, usage.completion_tokens), 10)

    def price(self, prompt_tokens: Any, completion_tokens: Any) -> Any:
        """US dollars for these tokens: numbers, or numpy arrays (element-wise)."""
        return (prompt_tokens * self.prompt_per_million
                + completion_tokens * self.completion_per_million) / 1e6


def estimate_tokens(characters: int) -> int:
    """Tokens for ``characters`` of text: characters / 4, rounded up (element-wise for a
    numpy array of integers).

    A rule of thumb for English with BPE tokenizers, good to about ±25%: use it to size a
    run, not to bill one.

    Example:
        >>> estimate_tokens(10)
        3
    """
    return -(-characters // CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Tokens (and cost, when priced) a run is expected to use, before it is sent."""

    prompt_tokens: int
    completion_tokens: int
    cost: float | None = None


def estimate_requests(characters: int, requests: int, *, overhead_characters: int = 0,
                      messages: int = 0, message_overhead_characters: int = 0,
                      pricing: Pricing | None = None) -> Estimate:
    """Estimate what ``requests`` requests holding ``characters`` of messages will use.

    Prompt tokens are :func:`estimate_tokens` of the messages plus, per request, the
    backend's ``overhead_characters`` (instructions, schema, framing) and, per message, its
    ``message_overhead_characters`` (role, timestamp); completion tokens are
    ``COMPLETION_TOKENS_PER_REQUEST`` per request (see there why a fixed allowance).

    Args:
        characters: characters of message content to send.
        requests: how many requests they take (after chunking).
        overhead_characters: what each request adds around the messages.
        messages: how many messages they are.
        message_overhead_characters: what each message adds around its content.
        pricing: prices to turn the tokens into a cost (None: no cost).

    Returns:
        An :class:`Estimate`.
    """
    usage = Usage(prompt_tokens=estimate_tokens(characters + requests * overhead_characters
                                                + messages * message_overhead_characters),
                  completion_tokens=requests * COMPLETION_TOKENS_PER_REQUEST)
    return Estimate(usage.prompt_tokens, usage.completion_tokens,
                    pricing.cost(usage) if pricing is not None else None)


def pricing_of(backend: Any) -> Pricing | None:
    """The backend's ``pricing`` attribute (None when it has none: it does not bill by token,
    or no prices were given)."""
    return getattr(backend, "pricing", None)


def prompt_overhead_of(backend: Any) -> int:
    """Characters the backend adds around each request's messages (its
    ``prompt_overhead_characters()``, a method or a number), 0 when it does not say."""
    return _characters(backend, "prompt_overhead_characters")


def message_overhead_of(backend: Any) -> int:
    """Characters the backend adds around each message's content (its
    ``message_overhead_characters()``, a method or a number), 0 when it does not say."""
    return _characters(backend, "message_overhead_characters")


def _characters(backend: Any, name: str) -> int:
    overhead = getattr(backend, name, None)
    if callable(overhead):
        overhead = overhead()
    return int(overhead) if overhead else 0


def bills_by_token(backend: Any) -> bool:
    """True for a backend that says how it counts tokens (prices or a prompt overhead): the
    one kind for which token estimates mean something."""
    return (pricing_of(backend) is not None
            or getattr(backend, "prompt_overhead_characters", None) is not None)


def format_cost(cost: float) -> str:
    """Dollars with four decimals (small runs cost fractions of a cent): ``$0.0123``."""
    return f"${cost:,.4f}"


def describe_usage(prompt_tokens: int | None, completion_tokens: int | None,
                   cost: float | None = None) -> str:
    """``"12,345 prompt + 2,100 completion tokens, $0.0123"``; ``""`` when no tokens were
    reported (the AA service, the local extractor), so summaries stay as they were."""
    if prompt_tokens is None and completion_tokens is None:
        return ""
    text = (f"{prompt_tokens or 0:,} prompt + {completion_tokens or 0:,} completion tokens")
    return text + (f", {format_cost(cost)}" if cost is not None else "")
