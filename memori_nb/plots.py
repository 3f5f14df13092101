"""Charts of chunking statistics (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigurationError
from .models import SeedConfig
from .stats import _check_stats

__all__ = ["plot_chunking_stats"]

PLOT_INSTALL_HINT = "pip install 'memori_nb[plot]'"
# A histogram switches to a log x axis when the largest value is this many times the smallest.
_LOG_SCALE_RATIO = 100
_HISTOGRAM_BINS = 40


def plot_chunking_stats(stats: pd.DataFrame, *, ax: Any = None,
                        config: SeedConfig | None = None) -> Any:
    """Draw :func:`chunking_stats`: characters per conversation, and requests per conversation.

    Left: a histogram of characters per valid conversation (log x axis when the sizes span
    more than a factor of 100), with the per-request character limit marked when ``config``
    is given. Right: how many conversations need 1, 2, 3 ... requests.

    Needs matplotlib (``pip install 'memori_nb[plot]'``). The figure is not left open in
    pyplot: it shows once as a cell's value; keep it and call ``fig.savefig(...)`` to save.

    Args:
        stats: a frame from :func:`chunking_stats`.
        ax: two matplotlib Axes to draw into (e.g. from ``plt.subplots(1, 2)``); a new
            figure when None.
        config: the SeedConfig the stats were planned with, to mark its character limit.

    Returns:
        The matplotlib Figure.

    Raises:
        ImportError: matplotlib is not installed.
        InvalidInputError: ``stats`` is not a frame from chunking_stats.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"conversation_id": ["c1", "c2"], "role": ["user", "user"],
        ...                    "content": ["hello", "a longer message"]})
        >>> fig = plot_chunking_stats(chunking_stats(df, entity_id="u1"))  # doctest: +SKIP
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"plot_chunking_stats needs matplotlib: {PLOT_INSTALL_HINT}") from exc
    _check_stats(stats)
    if config is not None and not isinstance(config, SeedConfig):
        raise ConfigurationError(f"config must be a SeedConfig, got {type(config).__name__}")
    if ax is None:
        fig, (chars_ax, requests_ax) = plt.subplots(1, 2, figsize=(11, 4))
        # Closed in pyplot so a notebook shows it once, as the returned value.
        plt.close(fig)
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != 2:
            raise ConfigurationError(f"ax must be two matplotlib Axes (one per panel), "
                                     f"got {len(axes)}")
        chars_ax, requests_ax = axes
        fig = chars_ax.figure
    valid = stats["error"].isna().to_numpy()
    characters = stats["characters"].to_numpy(dtype=np.int64)[valid]
    requests = stats["requests"].to_numpy(dtype=np.int64)[valid]
    _draw_characters(chars_ax, characters, config)
    _draw_requests(requests_ax, requests)
    invalid = int((~valid).sum())
    fig.suptitle(f"{valid.sum():,} conversations to send"
                 + (f" ({invalid:,} invalid, not shown)" if invalid else ""))
    fig.tight_layout()
    return fig


def _draw_characters(ax: Any, characters: np.ndarray, config: SeedConfig | None) -> None:
    ax.set_title("Characters per conversation")
    ax.set_xlabel("characters")
    ax.set_ylabel("conversations")
    if len(characters) == 0:
        ax.text(0.5, 0.5, "no valid conversations", ha="center", va="center",
                transform=ax.transAxes)
    else:
        low, high = max(int(characters.min()), 1), int(characters.max())
        if high >= low * _LOG_SCALE_RATIO:
            bins = np.logspace(np.log10(low), np.log10(high), _HISTOGRAM_BINS + 1)
            ax.set_xscale("log")
        else:
            bins = min(_HISTOGRAM_BINS, max(high - low, 1))
        ax.hist(characters, bins=bins, color="tab:blue")
    if config is not None:
        ax.axvline(config.max_chars_per_request, color="tab:red", linestyle="--",
                   label=f"limit: {config.max_chars_per_request:,} characters per request")
        ax.legend(loc="best", fontsize="small")


def _draw_requests(ax: Any, requests: np.ndarray) -> None:
    ax.set_title(f"Requests per conversation ({int(requests.sum()):,} in all)")
    ax.set_xlabel("requests")
    ax.set_ylabel("conversations")
    if len(requests) == 0:
        ax.text(0.5, 0.5, "no valid conversations", ha="center", va="center",
                transform=ax.transAxes)
        return
    counts = np.bincount(requests)
    needed = np.flatnonzero(counts)
    ax.bar(needed, counts[needed], color="tab:green")
    if len(needed) <= 20:
        ax.set_xticks(needed)
