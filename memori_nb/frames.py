"""DataFrames in, DataFrames out: load conversations from pandas and size up a run.

- :func:`from_dataframe` turns a long frame (one row per message) or a nested frame (one row
  per conversation with a list of messages) into one :class:`SeedData` per entity.
- :func:`chunking_stats` says, per conversation, how many messages, characters, estimated
  tokens and requests it takes, before anything is sent; :func:`stats_totals` adds it up.
- :func:`plot_chunking_stats` draws those statistics (needs the ``plot`` extra: matplotlib).

A row that cannot become a message (missing content, unknown role, a timestamp that is not a
date) fails its own conversation, as an :class:`~memori_nb.validation.Invalid` whose reason
names the conversation and the row; the other conversations of the frame are untouched.
A frame whose shape is unusable as a whole (not a DataFrame, no rows, a missing column)
raises :class:`~memori_nb.errors.InvalidInputError`.
"""

from __future__ import annotations

import dataclasses
import operator
import types
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from ._gc import paused_gc
from .chunking import PlanRow, plan_seeds
from .errors import ConfigurationError, InvalidInputError
from .models import ROLES, Conversation, Message, SeedConfig, SeedData
from .validation import Invalid

__all__ = ["STATS_COLUMNS", "TOTALS_COLUMNS", "chunking_stats", "from_dataframe",
           "plot_chunking_stats", "stats_totals"]

#: Columns of :func:`chunking_stats`, one row per conversation (the fields of ``PlanRow``).
STATS_COLUMNS = ("entity_id", "conversation_id", "messages", "characters", "estimated_tokens",
                 "requests", "largest_message", "over_limit", "error")
#: Columns of :func:`stats_totals` after the grouping column(s).
TOTALS_COLUMNS = ("conversations", "valid", "invalid", "messages", "characters",
                  "estimated_tokens", "requests", "over_limit")

PLOT_INSTALL_HINT = "pip install 'memori_nb[plot]'"

# Problems listed in one failure reason before "and N more".
_MAX_PROBLEMS_LISTED = 3
# Column names shown in a missing-column message before "...".
_MAX_COLUMNS_LISTED = 20
# A histogram switches to a log x axis when the largest value is this many times the smallest.
_LOG_SCALE_RATIO = 100
_HISTOGRAM_BINS = 40

_ROLE_OBJECTS = np.array(ROLES, dtype=object)
_ROLE_INDEX = pd.Index(ROLES)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAT = np.iinfo(np.int64).min

# Common names for each column, to suggest the keyword that fixes a missing-column error.
_SYNONYMS = {
    "entity_col": ("entity_id", "entity", "user_id", "userid", "user", "customer_id",
                   "account_id", "owner_id"),
    "conversation_col": ("conversation_id", "conversation", "conv_id", "conv", "thread_id",
                         "thread", "session_id", "session", "chat_id", "chat", "dialog_id",
                         "dialogue_id"),
    "role_col": ("role", "speaker", "author", "sender", "from", "participant", "speaker_role"),
    "content_col": ("content", "text", "message", "body", "utterance", "msg", "message_text"),
    "timestamp_col": ("timestamp", "time", "ts", "created_at", "created", "date", "datetime",
                      "sent_at"),
    "messages_col": ("messages", "turns", "chat_messages", "dialog", "dialogue"),
    "title_col": ("title", "name", "subject"),
}


def from_dataframe(df: pd.DataFrame, *, entity_id: str | None = None,
                   entity_col: str = "entity_id", conversation_col: str = "conversation_id",
                   role_col: str = "role", content_col: str = "content",
                   timestamp_col: str = "timestamp", messages_col: str | None = "messages",
                   title_col: str = "title", process_id: str | None = None) -> list[SeedData]:
    """Load conversations from a DataFrame: one :class:`SeedData` per entity.

    Two layouts are read:

    - **long**: one row per message, with columns for the conversation id, role and content,
      and optionally the entity id, a timestamp and a title;
    - **nested**: one row per conversation, detected by a ``messages_col`` column whose cells
      are lists of ``{"role", "content", "timestamp"?}`` dicts (or :class:`Message` objects);
      the conversation id comes from ``conversation_col``, or from ``id`` when that is absent.
      Pass ``messages_col=None`` to read a frame as long even if it has a ``messages`` column.

    Order: entities and conversations come in the order of their first row. In a long frame
    the messages of a conversation are sorted by the timestamp column when there is one, with
    a stable sort: equal timestamps keep row order, and rows without a timestamp go last,
    in row order. Without a timestamp column they keep row order. In a nested frame messages
    keep the order of their list.

    Values: ids that are numbers become strings (``17`` and ``17.0`` become ``"17"``).
    Timestamps become timezone-aware UTC datetimes: datetime columns and ISO 8601 strings
    (other date strings are parsed as :func:`pandas.to_datetime` would, month first), numbers
    are Unix epoch seconds, and naive values are taken as UTC. A conversation's title is the
    first non-empty value of ``title_col``, when the frame has it.

    Args:
        df: the frame.
        entity_id: the entity of every row, for a frame without an entity column.
        entity_col, conversation_col, role_col, content_col, timestamp_col, messages_col,
            title_col: the frame's column names, when they differ from the defaults.
        process_id: optional process id put on every :class:`SeedData`.

    Returns:
        ``list[SeedData]``. Each conversation is a :class:`Conversation`, or an
        :class:`~memori_nb.validation.Invalid` when a row of it is unusable; its reason names
        the conversation and the row (the frame's index label), e.g.
        ``"conversation 'c7': row 1532: content is missing (NaN)"``. Rows without a
        conversation id form one failed conversation per entity, named ``#<position>``.

    Raises:
        InvalidInputError: ``df`` is not a DataFrame or has no rows; a column is missing (the
            message names it, lists the frame's columns and the keyword to pass); the frame
            has an entity column and ``entity_id`` was given too; an entity id is missing.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "conversation_id": ["c1", "c1", "c2"],
        ...     "role": ["user", "assistant", "user"],
        ...     "content": ["I adopted a cat.", "Congratulations!", "I live in Porto."]})
        >>> [seed] = from_dataframe(df, entity_id="user-1")
        >>> [(c.id, len(c.messages)) for c in seed.conversations]
        [('c1', 2), ('c2', 1)]
    """
    _check_frame(df)
    if entity_id is not None and (not isinstance(entity_id, str) or not entity_id.strip()):
        raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
    if process_id is not None and (not isinstance(process_id, str) or not process_id.strip()):
        raise InvalidInputError(f"process_id must be a non-empty string or None, "
                                f"got {process_id!r}")
    columns = set(df.columns)
    if entity_id is not None and entity_col in columns:
        raise InvalidInputError(
            f"the frame has an entity column {entity_col!r} and entity_id={entity_id!r} was "
            f"given too; pass entity_id only for a frame without an entity column, or select "
            f"the rows instead: df[df[{entity_col!r}] == {entity_id!r}]")
    with paused_gc():  # millions of acyclic objects: collections would only rescan them
        if messages_col is not None and messages_col in columns:
            return _load_nested(df, entity_id=entity_id, entity_col=entity_col,
                                conversation_col=conversation_col, messages_col=messages_col,
                                title_col=title_col, process_id=process_id)
        if messages_col not in (None, "messages"):
            _raise_missing(df, [("messages_col", messages_col)])
        return _load_long(df, entity_id=entity_id, entity_col=entity_col,
                          conversation_col=conversation_col, role_col=role_col,
                          content_col=content_col, timestamp_col=timestamp_col,
                          title_col=title_col, process_id=process_id)


def chunking_stats(data: pd.DataFrame | SeedData | Sequence[SeedData],
                   config: SeedConfig | None = None, **from_dataframe_kwargs: Any
                   ) -> pd.DataFrame:
    """How each conversation will be sent: sizes and request counts, before sending anything.

    Args:
        data: a DataFrame (read with :func:`from_dataframe`), a :class:`SeedData`, or a list
            of them.
        config: the limits to plan with (``SeedConfig()`` when None).
        **from_dataframe_kwargs: keywords for :func:`from_dataframe` (``entity_id=``,
            ``conversation_col=`` ...), when ``data`` is a DataFrame.

    Returns:
        One row per conversation, in input order, with the columns ``STATS_COLUMNS``:
        ``entity_id``, ``conversation_id``, ``messages``, ``characters``,
        ``estimated_tokens`` (characters / 4, rounded up), ``requests``,
        ``largest_message`` (characters), ``over_limit`` (does not fit in one request) and
        ``error`` (None when the conversation is valid; then the counts are 0).

    Raises:
        InvalidInputError: ``data`` is none of the above, or the frame is unusable.

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
    if isinstance(data, pd.DataFrame):
        seeds = from_dataframe(data, **from_dataframe_kwargs)
    else:
        if from_dataframe_kwargs:
            raise InvalidInputError(
                f"{', '.join(sorted(from_dataframe_kwargs))}: these keywords are for a "
                f"DataFrame, but data is a {type(data).__name__}")
        if isinstance(data, SeedData):
            seeds = [data]
        elif (isinstance(data, (list, tuple))
              and all(isinstance(seed, SeedData) for seed in data)):
            seeds = list(data)
        else:
            raise InvalidInputError(f"chunking_stats takes a DataFrame, a SeedData or a list "
                                    f"of SeedData, got {type(data).__name__}")
    if config is None:
        config = SeedConfig()
    elif not isinstance(config, SeedConfig):
        raise ConfigurationError(f"config must be a SeedConfig, got {type(config).__name__}")
    with paused_gc():  # the plan rows are acyclic; collections would rescan every message
        rows = list(plan_seeds(seeds, config))
    return _plan_frame(rows)


def stats_totals(stats: pd.DataFrame, by: str | list[str] | None = "entity_id"
                 ) -> pd.DataFrame:
    """Add up :func:`chunking_stats`: per entity (or any column), or one overall row.

    Counts follow :func:`memori_nb.chunking.total_plan`: ``messages``, ``characters``,
    ``estimated_tokens`` and ``requests`` count valid conversations only (what a run would
    send); ``over_limit`` counts every conversation flagged over a limit.

    Args:
        stats: a frame from :func:`chunking_stats`.
        by: the column(s) to group by, in order of first appearance (``"entity_id"``), or
            None for one row over everything (which then starts with ``entities``).

    Returns:
        A DataFrame with the grouping column(s) (or ``entities``), then ``TOTALS_COLUMNS``:
        ``conversations``, ``valid``, ``invalid``, ``messages``, ``characters``,
        ``estimated_tokens``, ``requests``, ``over_limit``.

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
    work = pd.DataFrame({
        "conversations": np.ones(len(stats), dtype=np.int64),
        "valid": valid.astype(np.int64),
        "invalid": (~valid).astype(np.int64),
        **{name: np.where(valid, stats[name].to_numpy(dtype=np.int64), 0)
           for name in ("messages", "characters", "estimated_tokens", "requests")},
        "over_limit": stats["over_limit"].to_numpy(dtype=bool).astype(np.int64),
    }, index=stats.index)
    if by is None:
        totals = work.sum().to_frame().T.astype(np.int64)
        totals.insert(0, "entities", int(stats["entity_id"].nunique()))
        return totals
    keys = [by] if isinstance(by, str) else list(by)
    missing = [key for key in keys if key not in stats.columns]
    if missing:
        raise InvalidInputError(f"stats has no column {', '.join(map(repr, missing))} to "
                                f"group by (columns: {_list_columns(stats.columns)})")
    clashing = [key for key in keys if key in TOTALS_COLUMNS]
    if clashing:
        raise InvalidInputError(f"cannot group by {', '.join(map(repr, clashing))}: the totals "
                                f"have a column of that name; group a copy with the column "
                                f"renamed")
    for key in keys:
        work[key] = stats[key]
    totals = work.groupby(keys, sort=False, dropna=False)[list(TOTALS_COLUMNS)].sum()
    return totals.reset_index()


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


# --- loading -----------------------------------------------------------------------------


def _check_frame(df: Any) -> None:
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise InvalidInputError(f"the DataFrame has no rows (columns: "
                                f"{_list_columns(df.columns)})")


def _load_long(df: pd.DataFrame, *, entity_id: str | None, entity_col: str,
               conversation_col: str, role_col: str, content_col: str, timestamp_col: str,
               title_col: str, process_id: str | None) -> list[SeedData]:
    columns = set(df.columns)
    required = [("conversation_col", conversation_col), ("role_col", role_col),
                ("content_col", content_col)]
    if entity_id is None:
        required.insert(0, ("entity_col", entity_col))
    optional = [("timestamp_col", timestamp_col, "timestamp"), ("title_col", title_col, "title")]
    # An optional column named on purpose must be there; the default name may be absent.
    missing = [(kw, name) for kw, name in required if name not in columns]
    missing += [(kw, name) for kw, name, default in optional
                if name != default and name not in columns]
    if missing:
        _raise_missing(df, missing)
    for keyword, name in required:
        _check_unique_column(df, keyword, name)

    entity_codes, entities = _entity_codes(df, entity_col, entity_id)
    conv_raw = df[conversation_col].to_numpy(dtype=object)
    conv_codes, conv_ids = _id_codes(conv_raw)
    id_missing = conv_codes < 0
    # Rows without a conversation id form one pseudo-conversation per entity (code n_ids).
    n_ids = len(conv_ids)
    key = entity_codes * (n_ids + 1) + np.where(id_missing, n_ids, conv_codes)
    group, _ = pd.factorize(key)  # codes in order of first appearance
    group = group.astype(np.int64)
    n_groups = int(group.max()) + 1
    _, first_rows = np.unique(group, return_index=True)

    timestamps = None
    if timestamp_col in columns:
        _check_unique_column(df, "timestamp_col", timestamp_col)
        timestamps = _parse_timestamps(df[timestamp_col])
        sort_key = np.where(timestamps.micros == _NAT, np.iinfo(np.int64).max, timestamps.micros)
        order = np.lexsort((sort_key, group))  # stable: ties and NaT keep row order
    else:
        order = np.argsort(group, kind="stable")

    titles = None
    if title_col in columns:
        titles = _first_title_per_group(df[title_col], group, n_groups)

    group_conv = conv_codes[first_rows]
    group_ids = [conv_ids[code] if code >= 0 else None for code in group_conv.tolist()]
    index = df.index

    def where(position: int) -> str:
        return f"row {_label(index[order[position]])}"

    role_raw = df[role_col].to_numpy(dtype=object)[order]
    content_raw = df[content_col].to_numpy(dtype=object)[order]
    return _assemble(
        entities=entities, group_entity=entity_codes[first_rows], group_ids=group_ids,
        group_titles=titles, group_of_row=group[order], n_groups=n_groups,
        roles=role_raw, contents=content_raw,
        timestamps=timestamps.take(order) if timestamps is not None else None,
        id_missing=id_missing[order], id_raw=conv_raw[order], where=where,
        names={"id": conversation_col, "role": role_col, "content": content_col,
               "timestamp": timestamp_col},
        group_problems={}, shape_problems={}, process_id=process_id)


def _load_nested(df: pd.DataFrame, *, entity_id: str | None, entity_col: str,
                 conversation_col: str, messages_col: str, title_col: str,
                 process_id: str | None) -> list[SeedData]:
    columns = set(df.columns)
    if conversation_col not in columns and conversation_col == "conversation_id" \
            and "id" in columns:
        conversation_col = "id"
    missing = []
    if entity_id is None and entity_col not in columns:
        missing.append(("entity_col", entity_col))
    if conversation_col not in columns:
        missing.append(("conversation_col", conversation_col))
    if title_col != "title" and title_col not in columns:
        missing.append(("title_col", title_col))
    if missing:
        _raise_missing(df, missing, nested=True)
    _check_unique_column(df, "messages_col", messages_col)
    _check_unique_column(df, "conversation_col", conversation_col)

    n = len(df)
    index = df.index
    entity_codes, entities = _entity_codes(df, entity_col, entity_id)
    conv_raw = df[conversation_col].to_numpy(dtype=object)
    conv_codes, conv_ids = _id_codes(conv_raw)
    group_ids = [conv_ids[code] if code >= 0 else None for code in conv_codes.tolist()]
    group_problems: dict[int, list[str]] = {}
    for row in np.flatnonzero(conv_codes < 0).tolist():
        group_problems[row] = [f"row {_label(index[row])}: "
                               f"{_missing_id_problem(conversation_col, conv_raw[row])}"]

    # Flatten every message into one list per field, so they are checked in bulk as in a
    # long frame; a conversation is one group, the groups in row order.
    roles: list[Any] = []
    contents: list[Any] = []
    stamps: list[Any] = []
    group_of_row: list[int] = []
    message_at: list[int] = []
    shape_problems: dict[int, str] = {}
    for row, cell in enumerate(df[messages_col].tolist()):
        if isinstance(cell, np.ndarray):
            cell = cell.tolist()
        if not isinstance(cell, (list, tuple)):
            group_problems.setdefault(row, []).append(
                f"row {_label(index[row])}: {messages_col} "
                + (f"is missing ({_na_name(cell)})" if _na_name(cell)
                   else f"must be a list of messages, got {type(cell).__name__}"))
            continue
        if not cell:
            group_problems.setdefault(row, []).append(
                f"row {_label(index[row])}: {messages_col} is empty")
            continue
        for position, message in enumerate(cell):
            if isinstance(message, dict):
                roles.append(message.get("role"))
                contents.append(message.get("content"))
                stamps.append(message.get("timestamp"))
            elif isinstance(message, Message):
                roles.append(message.role)
                contents.append(message.content)
                stamps.append(message.timestamp)
            else:
                # Kept as a placeholder row, so problems are listed in message order.
                shape_problems[len(roles)] = (f"must be an object with 'role' and 'content', "
                                              f"got {type(message).__name__}")
                roles.append(None)
                contents.append(None)
                stamps.append(None)
            group_of_row.append(row)
            message_at.append(position)

    timestamps = None
    if any(stamp is not None for stamp in stamps):
        timestamps = _parse_timestamps(pd.Series(stamps, dtype=object))
    rows_of = np.asarray(group_of_row, dtype=np.int64)

    def where(position: int) -> str:
        return (f"row {_label(index[group_of_row[position]])}: "
                f"{messages_col}[{message_at[position]}]")

    titles = None
    if title_col in columns:
        titles = _first_title_per_group(df[title_col], np.arange(n), n)
    return _assemble(
        entities=entities, group_entity=entity_codes, group_ids=group_ids,
        group_titles=titles, group_of_row=rows_of, n_groups=n,
        roles=_object_array(roles), contents=_object_array(contents),
        timestamps=timestamps, id_missing=None, id_raw=None, where=where,
        names={"id": conversation_col, "role": "role", "content": "content",
               "timestamp": "timestamp"},
        group_problems=group_problems, shape_problems=shape_problems, process_id=process_id)


@dataclasses.dataclass(frozen=True, slots=True)
class _Timestamps:
    """Parsed timestamps: UTC microseconds since the epoch (``_NAT`` when missing or bad),
    which rows held a value that is not a date, and the raw values (for messages)."""

    micros: np.ndarray
    bad: np.ndarray
    raw: np.ndarray | None  # None when no value can be bad (a datetime column)

    def take(self, order: np.ndarray) -> _Timestamps:
        return _Timestamps(micros=self.micros[order], bad=self.bad[order],
                           raw=None if self.raw is None else self.raw[order])


def _assemble(*, entities: list[str], group_entity: np.ndarray, group_ids: list[str | None],
              group_titles: list[str | None] | None, group_of_row: np.ndarray, n_groups: int,
              roles: np.ndarray, contents: np.ndarray, timestamps: _Timestamps | None,
              id_missing: np.ndarray | None, id_raw: np.ndarray | None,
              where: Callable[[int], str], names: dict[str, str],
              group_problems: dict[int, list[str]], shape_problems: dict[int, str],
              process_id: str | None) -> list[SeedData]:
    """Check message rows in bulk and build the SeedData.

    Invariant: the rows are in final message order and ``group_of_row`` is non-decreasing,
    so each group (conversation) is one contiguous slice of them.
    """
    n_rows = len(roles)
    role_codes = _role_codes(roles)
    content_list = contents.tolist()
    content_ok = np.fromiter(
        [isinstance(c, str) and c != "" and not c.isspace() for c in content_list],
        dtype=bool, count=n_rows)
    bad = (role_codes < 0) | ~content_ok
    if timestamps is not None:
        bad |= timestamps.bad
    if id_missing is not None:
        bad |= id_missing
    bad_group = np.bincount(group_of_row[bad], minlength=n_groups) > 0
    if group_problems:
        bad_group[list(group_problems)] = True
    counts = np.bincount(group_of_row, minlength=n_groups)
    bounds = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])

    # Build messages only for the rows of valid conversations.
    keep = ~bad_group[group_of_row]
    kept_roles = _ROLE_OBJECTS[role_codes[keep]].tolist()
    kept_contents = contents[keep].tolist()
    if timestamps is not None:
        kept_stamps = _micros_to_datetimes(timestamps.micros[keep])
    else:
        kept_stamps = repeat(None)
    messages = _build_many(Message, role=kept_roles, content=kept_contents,
                           timestamp=kept_stamps)
    good = np.flatnonzero(~bad_group)
    ends = np.cumsum(counts[good]).tolist()
    starts = [0] + ends[:-1]
    message_tuples = [tuple(messages[a:b]) for a, b in zip(starts, ends)]
    good_list = good.tolist()
    conversations = _build_many(
        Conversation, id=[group_ids[g] for g in good_list], messages=message_tuples,
        title=[group_titles[g] for g in good_list] if group_titles is not None else repeat(None))
    built: list[Any] = [None] * n_groups
    for g, conversation in zip(good_list, conversations):
        built[g] = conversation

    per_entity: list[list[Any]] = [[] for _ in entities]
    for g, entity in enumerate(group_entity.tolist()):
        listed = per_entity[entity]
        item = built[g]
        if item is None:
            item = _invalid_group(
                len(listed), group_ids[g], group_problems.get(g, []),
                np.flatnonzero(bad[bounds[g]:bounds[g + 1]]) + bounds[g],
                lambda p: (f"{where(p)} {shape_problems[p]}" if p in shape_problems else
                           _row_problem(p, where, names, roles, role_codes, content_list,
                                        content_ok, timestamps, id_missing, id_raw)))
        listed.append(item)
    return [SeedData.for_conversations(entity_id=entity, conversations=listed,
                                       process_id=process_id)
            for entity, listed in zip(entities, per_entity)]


def _invalid_group(index: int, conversation_id: str | None,
                   problems: list[str], bad_rows: np.ndarray,
                   describe: Callable[[int], str]) -> Invalid:
    label = conversation_id if conversation_id is not None else f"#{index}"
    total = len(problems) + len(bad_rows)
    listed = list(problems[:_MAX_PROBLEMS_LISTED])
    for position in bad_rows[:_MAX_PROBLEMS_LISTED - len(listed)].tolist():
        listed.append(describe(position))
    more = total - len(listed)
    reason = (f"conversation {label!r}: " + "; ".join(listed)
              + (f"; and {more} more" if more > 0 else ""))
    return Invalid(conversation_id=label, index=index, reason=reason)


def _row_problem(position: int, where: Callable[[int], str], names: dict[str, str],
                 roles: np.ndarray, role_codes: np.ndarray, contents: list[Any],
                 content_ok: np.ndarray, timestamps: _Timestamps | None,
                 id_missing: np.ndarray | None, id_raw: np.ndarray | None) -> str:
    problems = []
    if id_missing is not None and id_missing[position]:
        problems.append(_missing_id_problem(names["id"], id_raw[position]))
    if role_codes[position] < 0:
        problems.append(_value_problem(names["role"], roles[position], role=True))
    if not content_ok[position]:
        problems.append(_value_problem(names["content"], contents[position]))
    if timestamps is not None and timestamps.bad[position]:
        problems.append(f"{names['timestamp']} {_show(timestamps.raw[position])} is not a "
                        f"date and time")
    return f"{where(position)}: " + ", ".join(problems)


def _value_problem(name: str, value: Any, *, role: bool = False) -> str:
    na = _na_name(value)
    if na:
        return f"{name} is missing ({na})"
    if not isinstance(value, str):
        return f"{name} must be a string, got {type(value).__name__} {_show(value)}"
    if role:
        return f"{name} {value!r} is not one of {', '.join(ROLES)}"
    return f"{name} is empty" if value == "" else f"{name} is blank (only whitespace)"


def _missing_id_problem(name: str, value: Any) -> str:
    na = _na_name(value)
    return f"{name} is missing ({na})" if na else f"{name} is empty"


def _role_codes(roles: np.ndarray) -> np.ndarray:
    """Index of each role in ROLES, -1 when it is not one (missing, unknown, not a string)."""
    try:
        codes = _ROLE_INDEX.get_indexer(roles)
    except TypeError:  # unhashable cells (lists, dicts): look each one up
        codes = np.array([ROLES.index(r) if isinstance(r, str) and r in ROLES else -1
                          for r in roles.tolist()], dtype=np.intp)
    return codes


def _entity_codes(df: pd.DataFrame, entity_col: str,
                  entity_id: str | None) -> tuple[np.ndarray, list[str]]:
    if entity_col not in df.columns:
        return np.zeros(len(df), dtype=np.int64), [entity_id]
    _check_unique_column(df, "entity_col", entity_col)
    raw = df[entity_col].to_numpy(dtype=object)
    codes, ids = _id_codes(raw)
    missing = np.flatnonzero(codes < 0)
    if len(missing):
        rows = [_label(df.index[p]) for p in missing[:_MAX_PROBLEMS_LISTED].tolist()]
        more = len(missing) - len(rows)
        count = "1 row (row" if len(missing) == 1 else f"{len(missing):,} rows (rows"
        raise InvalidInputError(
            f"column {entity_col!r} has no entity id (missing or blank) in {count} "
            f"{', '.join(rows)}{f' and {more:,} more' if more > 0 else ''}); fill it or "
            f"drop those rows, e.g. df.dropna(subset=[{entity_col!r}])")
    return codes.astype(np.int64), ids


def _id_codes(raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes for ids in order of first appearance, as strings; -1 for missing or blank ids.

    Numbers become strings (``17`` and ``17.0`` both ``"17"``), so ``17`` and ``"17"`` are
    one id.
    """
    try:
        codes, uniques = pd.factorize(raw)
    except TypeError as exc:  # unhashable cells: lists, dicts
        raise InvalidInputError(f"an id column holds values that cannot be ids ({exc})") from exc
    uniques = uniques.tolist()
    if all(type(value) is str for value in uniques):  # the usual case: already text
        text_codes, texts = np.arange(len(uniques)), uniques
    else:  # merge values that read the same as text (17, 17.0 and "17")
        text_codes, texts = pd.factorize(_object_array([_id_text(v) for v in uniques]))
        texts = texts.tolist()
    blank = np.array([not text.strip() for text in texts], dtype=bool)
    # -1 for missing or blank; the extra slot at the end is what code -1 looks up.
    remap = np.append(np.where(blank[text_codes], -1, text_codes), -1).astype(np.int64)
    return remap[codes], texts


def _id_text(value: Any) -> str:
    if isinstance(value, str):
        return str(value)  # a plain str, also for numpy's str_
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _first_title_per_group(titles: pd.Series, group: np.ndarray,
                           n_groups: int) -> list[str | None]:
    """Each group's title: its first value present, in row order (None when blank)."""
    raw = titles.to_numpy(dtype=object)
    present = np.flatnonzero(~pd.isna(raw))
    # np.unique's return_index gives the first occurrence, and present is in row order.
    groups, first = np.unique(group[present], return_index=True)
    out: list[str | None] = [None] * n_groups
    for g, value in zip(groups.tolist(), raw[present[first]].tolist()):
        text = value if isinstance(value, str) else str(value)
        out[g] = text if text.strip() else None
    return out


def _parse_timestamps(values: pd.Series) -> _Timestamps:
    """Parse a timestamp column in bulk into UTC microseconds; see :func:`from_dataframe`."""
    n = len(values)
    dtype = values.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        micros = _to_micros(pd.to_datetime(values, utc=True))
        return _Timestamps(micros=micros, bad=np.zeros(n, dtype=bool), raw=None)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        seconds = values.to_numpy(dtype=np.float64, na_value=np.nan)
        micros = _epoch_micros(seconds)
        return _Timestamps(micros=micros, bad=~np.isnan(seconds) & (micros == _NAT),
                           raw=seconds)

    raw = values.to_numpy(dtype=object)

    missing = pd.isna(raw)
    micros = np.full(n, _NAT, dtype=np.int64)
    kinds = pd.api.types.infer_dtype(raw, skipna=True)
    if kinds in ("string", "datetime", "datetime64", "date", "empty"):
        numbers = np.zeros(n, dtype=bool)
    else:  # mixed: numbers are epoch seconds and must not reach the string parser
        numbers = np.array([isinstance(v, (int, float, np.integer, np.floating))
                            and not isinstance(v, (bool, np.bool_)) for v in raw.tolist()],
                           dtype=bool) & ~missing
    texts = ~missing & ~numbers
    if texts.any():
        micros[texts] = _parse_texts(raw[texts], "ISO8601")
        failed = np.flatnonzero(texts & (micros == _NAT))
        if len(failed):
            values_failed = raw[failed]
            blank = np.array([isinstance(v, str) and not v.strip()
                              for v in values_failed.tolist()], dtype=bool)
            missing[failed[blank]] = True
            retry = failed[~blank]
            if len(retry):
                micros[retry] = _parse_texts(raw[retry], "mixed")
    if numbers.any():
        micros[numbers] = _epoch_micros(np.asarray(raw[numbers].tolist(), dtype=np.float64))
    return _Timestamps(micros=micros, bad=~missing & (micros == _NAT), raw=raw)


def _parse_texts(values: np.ndarray, format: str) -> np.ndarray:
    """Parse date strings (or datetime objects) to UTC microseconds; _NAT where they are not."""
    try:
        parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce",
                                format=format)
    except (TypeError, ValueError):  # a cell of a type pandas refuses even when coercing
        return np.array([_parse_texts(_object_array([v]), format)[0] for v in values.tolist()]
                        if len(values) > 1 else [_NAT], dtype=np.int64)
    return _to_micros(parsed)


def _to_micros(parsed: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC microseconds since the epoch from a tz-aware datetime series (NaT -> _NAT)."""
    naive = pd.Series(parsed).dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy().astype("datetime64[us]").view(np.int64)


def _epoch_micros(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds to microseconds; NaN and values outside datetime's range become _NAT."""
    with np.errstate(invalid="ignore", over="ignore"):
        micros = np.round(seconds * 1_000_000)
        # datetime covers years 1..9999; the epoch offsets of those bounds, in microseconds.
        ok = np.isfinite(micros) & (micros > -62_135_596_800e6) & (micros < 253_402_300_800e6)
    out = np.full(len(seconds), _NAT, dtype=np.int64)
    out[ok] = micros[ok].astype(np.int64)
    return out


def _micros_to_datetimes(micros: np.ndarray) -> list[datetime | None]:
    """UTC datetimes from epoch microseconds, exactly, with C-level maps (no Python frames)."""
    missing = micros == _NAT
    micros = np.where(missing, 0, micros)
    seconds, fraction = np.divmod(micros, 1_000_000)
    if not fraction.any() and (seconds >= 0).all():
        # Whole seconds after 1970 (the usual case): fromtimestamp of an int is exact and
        # the fastest constructor.
        out = list(map(datetime.fromtimestamp, seconds.tolist(), repeat(timezone.utc)))
    else:
        out = list(map(operator.add, repeat(_EPOCH),
                       map(timedelta, repeat(0), repeat(0), micros.tolist())))
    for position in np.flatnonzero(missing).tolist():
        out[position] = None
    return out


def _build_many(cls: type, **columns: Any) -> list[Any]:
    """``[cls(**row) for row in columns]``, fast: what a million messages need.

    A frozen dataclass's ``__init__`` pays ``object.__setattr__`` per field in Python; with
    slots we can create the objects and fill each slot with C-level ``map`` calls instead.
    Used only when every field is a plain slot that is either given or has a plain default,
    and there is no ``__post_init__``; otherwise the ordinary constructor runs.
    """
    fields = dataclasses.fields(cls)
    lengths = {len(v) for v in columns.values() if not isinstance(v, repeat)}
    count = lengths.pop() if lengths else 0
    fast = (not hasattr(cls, "__post_init__")
            and all(isinstance(cls.__dict__.get(f.name), types.MemberDescriptorType)
                    for f in fields)
            and set(columns) <= {f.name for f in fields}
            and all(f.name in columns or f.default is not dataclasses.MISSING
                    for f in fields))
    if not fast:
        names = list(columns)
        return [cls(**dict(zip(names, row))) for row in zip(*columns.values())]
    objects = list(map(object.__new__, repeat(cls, count)))
    for f in fields:
        values = columns.get(f.name, repeat(f.default))
        deque(map(cls.__dict__[f.name].__set__, objects, values), maxlen=0)
    return objects


# --- messages about the frame ------------------------------------------------------------


def _raise_missing(df: pd.DataFrame, missing: list[tuple[str, str]], *,
                   nested: bool = False) -> None:
    names = [repr(name) for _, name in missing]
    quoted = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    noun = "column" if len(names) == 1 else "columns"
    hints = []
    for keyword, name in missing:
        guess = _guess_column(df.columns, keyword)
        value = repr(guess) if guess is not None else "'<column>'"
        hint = f"{keyword}={value}"
        if keyword == "entity_col":
            hint += " (or entity_id='...' for a frame of one entity)"
        hints.append(hint)
    layout = ("a nested frame (one row per conversation)" if nested
              else "a long frame (one row per message)")
    raise InvalidInputError(f"{noun} {quoted} not found in {layout} (columns: "
                            f"{_list_columns(df.columns)}); pass {', '.join(hints)}")


def _guess_column(columns: pd.Index, keyword: str) -> Any:
    by_lower = {}
    for column in columns:
        by_lower.setdefault(str(column).lower(), column)
    for candidate in _SYNONYMS.get(keyword, ()):
        if candidate in by_lower:
            return by_lower[candidate]
    return None


def _check_unique_column(df: pd.DataFrame, keyword: str, name: str) -> None:
    if isinstance(df[name], pd.DataFrame):
        raise InvalidInputError(f"the frame has more than one column named {name!r}; "
                                f"rename them so {keyword}={name!r} means one column")


def _list_columns(columns: pd.Index) -> str:
    names = [str(column) for column in columns]
    shown = ", ".join(names[:_MAX_COLUMNS_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_COLUMNS_LISTED else "")


def _object_array(values: list[Any]) -> np.ndarray:
    """A 1-d object array of ``values``; unlike np.asarray, list cells stay cells."""
    return np.fromiter(values, dtype=object, count=len(values))


def _label(label: Any) -> str:
    """A row's index label as the user would type it: ``1532``, ``'a'``, ``(1, 'a')``."""
    if isinstance(label, tuple):
        return f"({', '.join(_label(part) for part in label)})"
    return _show(label) if not isinstance(label, (int, np.integer)) or isinstance(
        label, (bool, np.bool_)) else str(int(label))


def _show(value: Any) -> str:
    """repr of a cell, with numpy scalars shown as the Python values they hold."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _na_name(value: Any) -> str | None:
    """How a missing value reads in a message (None, NaN, NA, NaT), or None if not missing."""
    if value is None:
        return "None"
    if value is pd.NA:
        return "NA"
    if value is pd.NaT:
        return "NaT"
    if isinstance(value, (float, np.floating)) and value != value:
        return "NaN"
    return None


# --- statistics --------------------------------------------------------------------------


def _plan_frame(rows: list[PlanRow]) -> pd.DataFrame:
    columns = list(zip(*map(operator.attrgetter(*STATS_COLUMNS), rows))) if rows else \
        [()] * len(STATS_COLUMNS)
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


# --- plotting ----------------------------------------------------------------------------


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
