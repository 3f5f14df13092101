"""Chunking statistics: how each conversation will be sent, before anything is sent.

:func:`chunking_stats` sizes every conversation (messages, characters, estimated tokens,
requests after chunking, whether it is over a limit, why it is invalid); :func:`stats_totals`
adds it up, with the prompt and completion tokens and the cost a backend that bills by token
would take (estimates: :func:`memori_nb.pricing.estimate_requests`). Both use
:func:`memori_nb.chunking.plan_seeds`, the code the dry run reports,
except for what :func:`from_dataframe` already measured: a conversation it found valid and
that fits in one request is counted from its :class:`~memori_nb.sources.dataframe.MeasuredSizes`
instead of being validated again message by message.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._interpreter import paused_gc
from .chunking import (ConversationPlan, PlanRow, oversize_reason, plan_conversation,
                       plan_seeds)
from .errors import ConfigurationError, InvalidInputError
from .models import Conversation, Message, SeedConfig, SeedData
from .pricing import (COMPLETION_TOKENS_PER_REQUEST, Pricing, bills_by_token, estimate_tokens,
                      message_overhead_of, pricing_of, prompt_overhead_of)
from .sources.dataframe import MEASURED, MeasuredSizes, from_dataframe
from .validation import conversation_label

__all__ = ["ESTIMATE_COLUMNS", "STATS_COLUMNS", "TOTALS_COLUMNS", "chunking_stats",
           "stats_totals"]

#: Columns of :func:`chunking_stats`, one row per conversation (the fields of ``PlanRow``).
STATS_COLUMNS = ("entity_id", "conversation_id", "messages", "characters", "estimated_tokens",
                 "requests", "largest_message", "over_limit", "error")
#: Columns added to :func:`chunking_stats` and :func:`stats_totals` for a backend that
#: bills by token, or prices: what its requests would take (estimates).
ESTIMATE_COLUMNS = ("estimated_prompt_tokens", "estimated_completion_tokens", "estimated_cost")
#: Columns of :func:`stats_totals` after the grouping column(s) (then ESTIMATE_COLUMNS,
#: when the stats have them).
TOTALS_COLUMNS = ("conversations", "valid", "invalid", "messages", "characters",
                  "estimated_tokens", "requests", "over_limit")
_MAX_COLUMNS_LISTED = 20
# A PlanRow's values in STATS_COLUMNS order.
_row_values = operator.attrgetter(*STATS_COLUMNS)


def chunking_stats(data: pd.DataFrame | SeedData | Sequence[SeedData],
                   config: SeedConfig | None = None, *, backend: Any = None,
                   pricing: Pricing | None = None, **from_dataframe_kwargs: Any
                   ) -> pd.DataFrame:
    """How each conversation will be sent: sizes, request counts, tokens and cost, before
    sending anything.

    Args:
        data: a DataFrame (read with :func:`from_dataframe`), a :class:`SeedData`, or a list
            of them.
        config: the limits to plan with (``SeedConfig()`` when None).
        backend: the backend the run will use: its ``prompt_overhead_characters()`` (the
            instructions each request carries) counts towards the prompt tokens, and its
            ``pricing`` prices them. Optional.
        pricing: a :class:`~memori_nb.pricing.Pricing` to price the tokens with (instead of
            the backend's).
        **from_dataframe_kwargs: keywords for :func:`from_dataframe` (``entity_id=``,
            ``conversation_col=`` ...), when ``data`` is a DataFrame.

    Returns:
        One row per conversation, in input order, with the columns ``STATS_COLUMNS``:
        ``entity_id``, ``conversation_id``, ``messages``, ``characters``,
        ``estimated_tokens`` (characters / 4, rounded up), ``requests``,
        ``largest_message`` (characters), ``over_limit`` (does not fit in one request) and
        ``error`` (None when the conversation is valid; else the counts are 0). Given
        ``pricing``, or a backend that bills by token (one with ``pricing`` or
        ``prompt_overhead_characters``), then ``ESTIMATE_COLUMNS`` too:
        ``estimated_prompt_tokens`` (the characters plus the backend's overhead per request,
        / 4, rounded up), ``estimated_completion_tokens`` (``COMPLETION_TOKENS_PER_REQUEST``
        per request) and ``estimated_cost`` (US dollars; NaN without prices).

    Raises:
        InvalidInputError: ``data`` is none of the above, or the frame is unusable.
        ConfigurationError: ``config`` is not a SeedConfig, or ``pricing`` not a Pricing.

    Example:
        >>> import pandas as pd
        >>> from memori_nb import SeedConfig
        >>> df = pd.DataFrame({"conversation_id": ["c1", "c1", "c1"],
        ...                    "role": ["user", "assistant", "user"],
        ...                    "content": ["12345678", "1234", "12"]})
        >>> stats = chunking_stats(df, SeedConfig(max_messages_per_request=2), entity_id="u1")
        >>> stats.loc[0, ["messages", "characters", "estimated_tokens", "requests"]].tolist()
        [3, 14, 4, 2]
    """
    seeds = seeds_of(data, from_dataframe_kwargs)
    config = config_of(config)
    pricing = pricing_for(backend, pricing)
    with paused_gc():  # the plan rows are acyclic; collections would rescan every message
        rows = [row for seed in seeds for row in plan_rows(seed, config)]
    return stats_frame(rows, backend, pricing)


def seeds_of(data: Any, from_dataframe_kwargs: dict[str, Any]) -> list[SeedData]:
    """What :func:`chunking_stats` takes (a DataFrame, a SeedData or a list of them) as a
    list of SeedData."""
    if isinstance(data, pd.DataFrame):
        return from_dataframe(data, **from_dataframe_kwargs)
    if from_dataframe_kwargs:
        raise InvalidInputError(
            f"{', '.join(sorted(from_dataframe_kwargs))}: these keywords are for a "
            f"DataFrame, but data is a {type(data).__name__}")
    if isinstance(data, SeedData):
        return [data]
    if isinstance(data, (list, tuple)) and all(isinstance(seed, SeedData) for seed in data):
        return list(data)
    raise InvalidInputError(f"chunking_stats takes a DataFrame, a SeedData or a list "
                            f"of SeedData, got {type(data).__name__}")


def config_of(config: SeedConfig | None) -> SeedConfig:
    """``config``, or ``SeedConfig()`` for None (ConfigurationError for anything else)."""
    if config is None:
        return SeedConfig()
    if not isinstance(config, SeedConfig):
        raise ConfigurationError(f"config must be a SeedConfig, got {type(config).__name__}")
    return config


def pricing_for(backend: Any, pricing: Pricing | None) -> Pricing | None:
    """The prices to estimate with: ``pricing``, else the backend's (None: none known)."""
    if pricing is None:
        return pricing_of(backend)
    if not isinstance(pricing, Pricing):
        raise ConfigurationError(f"pricing must be a memori_nb.pricing.Pricing, got "
                                 f"{type(pricing).__name__}")
    return pricing


def stats_frame(rows: list[tuple], backend: Any, pricing: Pricing | None) -> pd.DataFrame:
    """The frame of :func:`chunking_stats` from rows of STATS_COLUMNS values; with the token
    and cost estimates when priced or when the backend bills by token."""
    frame = _plan_frame(rows)
    if pricing is None and not bills_by_token(backend):
        return frame  # tokens mean nothing to the AA service or the local extractor
    return _with_estimates(frame, prompt_overhead_of(backend), message_overhead_of(backend),
                           pricing)


def stats_totals(stats: pd.DataFrame, by: str | list[str] | None = "entity_id"
                 ) -> pd.DataFrame:
    """Add up :func:`chunking_stats`: per entity (or any column), or one overall row.

    Counts follow :func:`memori_nb.chunking.total_plan`: ``messages``, ``characters``,
    ``estimated_tokens``, ``requests`` (and the token and cost estimates, when the stats have
    them) count valid conversations only (what a run would send); ``over_limit`` counts every
    conversation flagged over a limit. ``estimated_cost`` is NaN when the stats were made
    without prices.

    Args:
        stats: a frame from :func:`chunking_stats`.
        by: the column(s) to group by, in order of first appearance (``"entity_id"``), or
            None for one row over everything (which then starts with ``entities``).

    Returns:
        A DataFrame with the grouping column(s) (or ``entities``), then ``TOTALS_COLUMNS``:
        ``conversations``, ``valid``, ``invalid``, ``messages``, ``characters``,
        ``estimated_tokens``, ``requests``, ``over_limit``; then ``ESTIMATE_COLUMNS`` when
        ``stats`` has them.

    Raises:
        InvalidInputError: ``stats`` is not a frame with the columns of chunking_stats.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"entity_id": ["a", "a", "b"],
        ...                    "conversation_id": ["c1", "c2", "c1"],
        ...                    "role": ["user"] * 3, "content": ["hello", "hi", "hey there"]})
        >>> stats_totals(chunking_stats(df))[["entity_id", "conversations", "characters"]]
          entity_id  conversations  characters
        0         a              2           7
        1         b              1           9
        >>> int(stats_totals(chunking_stats(df), by=None)["requests"].iloc[0])
        3
    """
    _check_stats(stats)
    valid = stats["error"].isna().to_numpy()
    estimated = all(name in stats.columns for name in ESTIMATE_COLUMNS)
    counted = ["messages", "characters", "estimated_tokens", "requests"]
    if estimated:
        counted += ["estimated_prompt_tokens", "estimated_completion_tokens"]
    work = pd.DataFrame({
        "conversations": np.ones(len(stats), dtype=np.int64),
        "valid": valid.astype(np.int64),
        "invalid": (~valid).astype(np.int64),
        **{name: np.where(valid, stats[name].to_numpy(dtype=np.int64), 0)
           for name in counted},
        "over_limit": stats["over_limit"].to_numpy(dtype=bool).astype(np.int64),
    }, index=stats.index)
    columns = list(TOTALS_COLUMNS)
    if estimated:
        columns += list(ESTIMATE_COLUMNS)
        work["estimated_cost"] = np.where(valid, stats["estimated_cost"].to_numpy(float), 0.0)
        work = work.reindex(columns=columns)
    # Without prices there is no cost to add up: NaN, not $0.
    priced = estimated and bool(stats["estimated_cost"].notna().any())
    if by is None:
        totals = work.drop(columns="estimated_cost", errors="ignore").sum().to_frame().T
        totals = totals.astype(np.int64)
        if estimated:
            totals["estimated_cost"] = work["estimated_cost"].sum() if priced else np.nan
        totals.insert(0, "entities", int(stats["entity_id"].nunique()))
        return totals
    keys = [by] if isinstance(by, str) else list(by)
    missing = [key for key in keys if key not in stats.columns]
    if missing:
        raise InvalidInputError(f"stats has no column {', '.join(map(repr, missing))} to "
                                f"group by (columns: {_list_columns(stats.columns)})")
    clashing = [key for key in keys if key in columns]
    if clashing:
        raise InvalidInputError(f"cannot group by {', '.join(map(repr, clashing))}: the totals "
                                f"have a column of that name; group a copy with the column "
                                f"renamed")
    for key in keys:
        work[key] = stats[key]
    totals = work.groupby(keys, sort=False, dropna=False)[columns].sum()
    if estimated and not priced:
        totals["estimated_cost"] = np.nan
    return totals.reset_index()


def plan_rows(seed: SeedData, config: SeedConfig, *, content_hashes: bool = False,
              on_validated: Callable[[PlanRow], Any] | None = None) -> Iterator[tuple]:
    """The STATS_COLUMNS values of each conversation of ``seed``, in order: from the
    loader's measured sizes when it has them, else validated by :func:`plan_seeds`, which
    then hands each of its rows (with its warnings, and its content hash when
    ``content_hashes``) to ``on_validated`` first."""
    measured = None if content_hashes else _measured(seed)
    if measured is None:
        for row in plan_seeds([seed], config, content_hashes=content_hashes):
            if on_validated is not None:
                on_validated(row)
            yield _row_values(row)
        return
    for index, (raw, sizes) in enumerate(zip(seed.conversations, measured)):
        conversation_id = conversation_label(raw, index)
        error = None
        if (sizes.count > config.max_messages_per_request
                or sizes.characters > config.max_chars_per_request):
            plan, error = _split_plan(conversation_id, raw["messages"], config)
        else:
            plan = ConversationPlan(messages=sizes.count, characters=sizes.characters,
                                    largest_message=sizes.largest_message, requests=1,
                                    over_limit=False)
        yield (seed.entity_id, conversation_id, plan.messages, plan.characters,
               plan.estimated_tokens, plan.requests, plan.largest_message, plan.over_limit,
               error)


def _split_plan(conversation_id: str, messages: list[dict],
                config: SeedConfig) -> tuple[ConversationPlan, str | None]:
    """The plan of a measured conversation too big for one request, and its error when
    chunking is off: the planner's own code, given the messages as validation will keep
    them. Only the texts' lengths and spaces matter, which validation leaves as they are,
    so neither roles nor times are read again."""
    conversation = Conversation(id=conversation_id, messages=tuple(
        Message(role="user", content=message["content"]) for message in messages))
    plan = plan_conversation(conversation, config)
    error = (None if config.chunk_large_conversations
             else oversize_reason(conversation, plan, config))
    return plan, error


def _measured(seed: SeedData) -> list[MeasuredSizes] | None:
    """The loader's sizes of every conversation of ``seed``, or None unless it measured them
    all, they still hold, and the ids are unique (so none fails as a duplicate). One
    conversation validation must judge sends the whole entity through the planner, which
    numbers conversations and finds duplicate ids across all of them."""
    if seed.size is None:  # streamed: reading them here would use them up
        return None
    measured = []
    for raw in seed.conversations:
        sizes = raw.get(MEASURED) if type(raw) is dict else None
        if not isinstance(sizes, MeasuredSizes) or not sizes.still_hold(raw):
            return None
        measured.append(sizes)
    if len({sizes.conversation_id for sizes in measured}) < len(measured):
        return None
    return measured


def _with_estimates(frame: pd.DataFrame, overhead: int, per_message: int,
                    pricing: Pricing | None) -> pd.DataFrame:
    """The plan with the tokens (and cost) each conversation's requests would take, worked
    out as :func:`memori_nb.pricing.estimate_requests` does, for all rows at once."""
    requests = frame["requests"].to_numpy(dtype=np.int64)
    prompt = estimate_tokens(frame["characters"].to_numpy(dtype=np.int64) + requests * overhead
                             + frame["messages"].to_numpy(dtype=np.int64) * per_message)
    completion = requests * COMPLETION_TOKENS_PER_REQUEST
    frame["estimated_prompt_tokens"] = prompt
    frame["estimated_completion_tokens"] = completion
    frame["estimated_cost"] = (pricing.price(prompt, completion) if pricing is not None
                               else np.full(len(frame), np.nan))
    return frame


def _plan_frame(rows: list[tuple]) -> pd.DataFrame:
    columns = list(zip(*rows)) if rows else [()] * len(STATS_COLUMNS)
    data = dict(zip(STATS_COLUMNS, columns))
    return pd.DataFrame({
        "entity_id": pd.Series(data["entity_id"], dtype="str"),
        "conversation_id": pd.Series(data["conversation_id"], dtype="str"),
        **{name: np.asarray(data[name], dtype=np.int64)
           for name in ("messages", "characters", "estimated_tokens", "requests",
                        "largest_message")},
        "over_limit": np.asarray(data["over_limit"], dtype=bool),
        # object, so a valid conversation's error is None (a str column would say NaN)
        "error": pd.Series(data["error"], dtype=object),
    }, columns=list(STATS_COLUMNS))


def _check_stats(stats: Any) -> None:
    if not isinstance(stats, pd.DataFrame):
        raise InvalidInputError(f"expected the DataFrame from chunking_stats, got "
                                f"{type(stats).__name__}")
    missing = [name for name in STATS_COLUMNS if name not in stats.columns]
    if missing:
        raise InvalidInputError(f"not a frame from chunking_stats: no column "
                                f"{', '.join(map(repr, missing))} (columns: "
                                f"{_list_columns(stats.columns)})")




def _list_columns(columns: pd.Index) -> str:
    names = [str(column) for column in columns]
    shown = ", ".join(names[:_MAX_COLUMNS_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_COLUMNS_LISTED else "")
