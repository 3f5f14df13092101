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
# A size axis (characters, messages, requests; with the limit) turns logarithmic when its
# largest value is this many times the smallest.
_LOG_SCALE_RATIO = 100
# A count axis turns logarithmic when the tallest bar is this many times the shortest: on a
# linear axis a bar of 1 beside one of 300 is a line no one sees.
_LOG_COUNT_RATIO = 20
_HISTOGRAM_BINS = 40
# Up to this many distinct sizes, each gets its own bar and tick.
_MAX_TICKED_VALUES = 20


def plot_chunking_stats(stats: pd.DataFrame, *, ax: Any = None,
                        config: SeedConfig | None = None) -> Any:
    """Draw :func:`chunking_stats`: characters, messages and requests per conversation.

    Three histograms of the valid conversations: characters and messages per conversation,
    each with its per-request limit marked (a conversation past a
    line is split into several requests), and how many conversations need 1, 2, 3 ...
    requests. An axis turns logarithmic where the values span orders of magnitude: sizes
    from a few characters to a marathon chat, or 300 conversations of one request beside one
    of two, so that a single long conversation still shows.

    Needs matplotlib (``pip install 'memori_nb[plot]'``). The figure is not left open in
    pyplot: it shows once as a cell's value; keep it and call ``fig.savefig(...)`` to save.

    Args:
        stats: a frame from :func:`chunking_stats`.
        ax: three matplotlib Axes to draw into (characters, messages, requests; e.g. from
            ``plt.subplots(1, 3)``), or two (characters and requests, without the messages
            panel); a new figure when None.
        config: the SeedConfig the stats were planned with, to mark its limits (the
            defaults, ``SeedConfig()``, when None).

    Returns:
        The matplotlib Figure.

    Raises:
        ImportError: matplotlib is not installed.
        InvalidInputError: ``stats`` is not a frame from chunking_stats.
        ConfigurationError: ``ax`` is not two or three Axes, or ``config`` not a SeedConfig.

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
    config = SeedConfig() if config is None else config  # the limits a run would use
    if ax is None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        # Closed in pyplot so a notebook shows it once, as the returned value.
        plt.close(fig)
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) not in (2, 3):
            raise ConfigurationError(f"ax must be three matplotlib Axes (characters, messages, "
                                     f"requests) or two (characters, requests), got "
                                     f"{len(axes)}")
        fig = axes[0].figure
    chars_ax, requests_ax = axes[0], axes[-1]
    valid = stats["error"].isna().to_numpy()
    values = {name: stats[name].to_numpy(dtype=np.int64)[valid]
              for name in ("characters", "messages", "requests")}
    _draw_sizes(chars_ax, values["characters"], "characters",
                config.max_chars_per_request, "tab:blue")
    if len(axes) == 3:
        _draw_sizes(axes[1], values["messages"], "messages",
                    config.max_messages_per_request, "tab:purple")
    requests = values["requests"]
    _draw_sizes(requests_ax, requests, "requests", None, "tab:green")
    requests_ax.set_title(f"Requests per conversation ({int(requests.sum()):,} in all)")
    n, invalid = int(valid.sum()), int((~valid).sum())
    fig.suptitle(f"{n:,} conversation{'' if n == 1 else 's'} to send"
                 + (f" ({invalid:,} invalid, not shown)" if invalid else ""))
    fig.tight_layout()
    return fig


def _draw_sizes(ax: Any, values: np.ndarray, unit: str, limit: int | None, color: str) -> None:
    """A histogram of one size per conversation (``unit``: characters, messages, requests),
    with the per-request ``limit`` marked when given (and there are conversations)."""
    ax.set_title(f"{unit.capitalize()} per conversation")
    ax.set_xlabel(unit)
    ax.set_ylabel("conversations")
    if len(values) == 0:
        ax.text(0.5, 0.5, "no valid conversations", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        low, high = max(int(values.min()), 1), int(values.max())
        reach = high if limit is None else max(high, limit)
        if reach >= low * _LOG_SCALE_RATIO:
            # The bins span the data (the axis reaches the limit: axvline widens it); their
            # edges sit between whole numbers, so small sizes get a bar each and no gaps.
            edges = np.logspace(np.log10(low), np.log10(high + 1), _HISTOGRAM_BINS + 1)
            bins = np.unique(np.rint(edges)) - 0.5
            ax.set_xscale("log")
        elif high - low < _HISTOGRAM_BINS:
            bins = np.arange(low, high + 2) - 0.5  # one bar per value
        else:
            bins = np.linspace(low, high + 1, _HISTOGRAM_BINS + 1)
        counts, _, _ = ax.hist(values, bins=bins, color=color)
        if high - low < _MAX_TICKED_VALUES and ax.get_xscale() == "linear":
            ax.set_xticks(np.unique(values))
        shown = counts[counts > 0]
        _scale_counts(ax, shown)
        if limit is not None:
            _mark_limit(ax, limit, unit, int((values > limit).sum()))
            _leave_headroom(ax, shown.max())


def _mark_limit(ax: Any, limit: int, unit: str, over: int) -> None:
    """The per-request limit as a dashed line, its legend saying how many are over it."""
    fits = ("every conversation fits" if over == 0 else "1 conversation over it is split"
            if over == 1 else f"{over:,} conversations over it are split")
    ax.axvline(limit, color="tab:red", linestyle="--",
               label=f"limit: {limit:,} {unit} per request\n{fits}")
    ax.legend(loc="upper left", fontsize="small")


def _leave_headroom(ax: Any, tallest: float) -> None:
    """Room above the tallest bar for the legend: the bars fill the lower 70% of the axes."""
    bottom = ax.get_ylim()[0]
    if ax.get_yscale() == "log":
        ax.set_ylim(bottom, bottom * (tallest / bottom) ** (1 / 0.7))
    else:
        ax.set_ylim(bottom, bottom + (tallest - bottom) / 0.7)


def _scale_counts(ax: Any, counts: np.ndarray) -> None:
    """The count axis: logarithmic when the bars' heights (``counts``, none 0) span
    ``_LOG_COUNT_RATIO``, down to 0.5 so a bar of one conversation still shows, labelled
    1, 10, 100; else linear with whole-number ticks."""
    from matplotlib.ticker import MaxNLocator, NullFormatter, StrMethodFormatter

    if counts.max() < counts.min() * _LOG_COUNT_RATIO:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        return
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
