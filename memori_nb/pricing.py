"""Token estimates and prices: what a run costs, before and after it is sent."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .models import Usage


@dataclass(frozen=True, slots=True)
class Pricing:
    """Prices in USD per million tokens, prompt and completion apart (as providers bill).

    Example:
        >>> Pricing(0.15, 0.60).cost(Usage(prompt_tokens=1_000_000, completion_tokens=500_000))
        0.45
    """

    prompt_per_million: float
    completion_per_million: float

    def cost(self, usage: Usage) -> float:
        """USD for ``usage`` at these prices."""
        return (usage.prompt_tokens * self.prompt_per_million
                + usage.completion_tokens * self.completion_per_million) / 1_000_000


def estimate_tokens(characters: int) -> int:
    """Tokens for ``characters`` characters of text: ``ceil(characters / 4)``, the usual rule
    of thumb for English with BPE tokenizers (exact counts come from the answer's ``usage``).

    Example:
        >>> estimate_tokens(10)
        3
    """
    return math.ceil(max(0, characters) / 4)
