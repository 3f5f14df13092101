"""pandas DataFrames in: one :class:`SeedData` per entity, judged by the common rules.

Two layouts are read:

- **long**: one row per message, with columns for the conversation id, role and content, and
  optionally the entity id, a timestamp and a title;
- **nested**: one row per conversation, detected by a ``messages_col`` column whose cells are
  lists of ``{"role", "content", "timestamp"?}`` dicts (a Hugging Face chat dataset's shape);
  the conversation id comes from ``conversation_col``, or from ``id``, or is derived from the
  messages when the frame has neither.

The reader only groups rows into raw conversations, each message located by its row
(``row 1532``); :mod:`memori_nb.validation` judges them as it judges every other source.
From a long frame it also measures, column by column, the conversations validation will
take as they are (:class:`MeasuredSizes`), so :func:`memori_nb.chunking_stats` need not
read their messages again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from .._interpreter import paused_gc
from ..errors import InvalidInputError
from ..models import SeedData
from ..timestamps import TimestampEvidence, read_timestamp
from ..validation import ReadOptions, derived_id, id_text

#: The key of a raw conversation's :class:`MeasuredSizes`.
MEASURED = "measured"
_MAX_COLUMNS_LISTED = 20
_MAX_ROWS_LISTED = 3

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
    "messages_col": ("messages", "turns", "chat_messages", "dialog", "dialogue",
                     "conversations"),
    "title_col": ("title", "name", "subject"),
}


@dataclass(frozen=True, slots=True)
class MeasuredSizes:
    """What the loader measured of a conversation validation will keep whole (every message
    has a role it keeps and text that is not blank), so statistics need not read it again.

    The sizes hold while the conversation keeps its id and this very ``messages`` list, of
    this length (see :meth:`still_hold`). A message edited in place is not noticed: after
    editing one, give the conversation a new list (``c["messages"] = [...]``) or drop its
    ``"measured"`` entry.
    """

    conversation_id: str
    messages: list = field(repr=False, compare=False)  # the list itself, to know it again
    count: int
    characters: int
    largest_message: int

    def still_hold(self, raw: dict) -> bool:
        """Whether ``raw`` is still the conversation measured (not given another id or list
        of messages, nor messages added or removed since)."""
        return (raw.get("messages") is self.messages and len(self.messages) == self.count
                and raw.get("id") == self.conversation_id)


def from_dataframe(df: pd.DataFrame, *, entity_id: str | None = None,
                   entity_col: str = "entity_id", conversation_col: str = "conversation_id",
                   role_col: str = "role", content_col: str = "content",
                   timestamp_col: str = "timestamp", messages_col: str | None = "messages",
                   title_col: str = "title", process_id: str | None = None,
                   dayfirst: bool | None = None, timestamp_format: str | None = None,
                   role_map: dict[str, str | None] | None = None) -> list[SeedData]:
    """Load conversations from a DataFrame: one :class:`SeedData` per entity.

    Order: entities and conversations come in the order of their first row. In a long frame
    the messages of a conversation are sorted by the timestamp column when there is one
    (stable: equal times keep row order; rows without a readable time go last, in row order),
    else kept in row order. In a nested frame messages keep the order of their list.

    Values: ids that are numbers become strings (``17`` and ``17.0`` become ``"17"``); ids
    lose surrounding whitespace (``' Jason '`` is ``'Jason'``, with a warning). Timestamps
    are read by the common rules (:mod:`memori_nb.timestamps`): day or month first is
    decided once for the whole column, from its values when they prove it, else from
    ``dayfirst=`` / ``timestamp_format=``.

    Args:
        df: the frame.
        entity_id: the entity of every row, for a frame without an entity column.
        entity_col, conversation_col, role_col, content_col, timestamp_col, messages_col,
            title_col: the frame's column names, when they differ from the defaults.
        process_id: optional process id put on every :class:`SeedData`.
        dayfirst: True when numeric dates are day/month/year, False for month/day/year;
            needed only when the column's values do not show it.
        timestamp_format: a ``strptime`` format every timestamp text follows, instead.
        role_map: more role names, e.g. ``{"agent": "assistant"}``; None as a value leaves
            such messages out.

    Returns:
        ``list[SeedData]`` of raw conversations, judged when planned or seeded: a row that
        cannot be a message fails its own conversation, named by its row
        (``"conversation 'c7': row 1532: role 'bot2' is not one of ..."``); the other
        conversations of the frame are untouched.
        From a long frame, a conversation validation will keep whole carries its sizes under
        ``"measured"`` (:class:`MeasuredSizes`), which :func:`~memori_nb.chunking_stats`
        counts instead of reading its messages again.

    Raises:
        InvalidInputError: ``df`` is not a DataFrame or has no rows; a column is missing (the
            message names it, lists the frame's columns and the keyword to pass); the frame
            has an entity column and ``entity_id`` was given too; an entity id is missing;
            the timestamp column's day/month order cannot be told
            (:class:`~memori_nb.timestamps.AmbiguousTimestampsError`).

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "conversation_id": ["c1", "c1", "c2"],
        ...     "role": ["user", "assistant", "user"],
        ...     "content": ["I adopted a cat.", "Congratulations!", "I live in Porto."]})
        >>> [seed] = from_dataframe(df, entity_id="user-1")
        >>> [(c["id"], len(c["messages"])) for c in seed.conversations]
        [('c1', 2), ('c2', 1)]
    """
    if not isinstance(df, pd.DataFrame):
        raise InvalidInputError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise InvalidInputError(f"the DataFrame has no rows (columns: {_columns(df)})")
    if entity_id is not None and (not isinstance(entity_id, str) or not entity_id.strip()):
        raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
    if process_id is not None and (not isinstance(process_id, str) or not process_id.strip()):
        raise InvalidInputError(f"process_id must be a non-empty string or None, "
                                f"got {process_id!r}")
    if entity_id is not None and entity_col in df.columns:
        raise InvalidInputError(
            f"the frame has an entity column {entity_col!r} and entity_id={entity_id!r} was "
            f"given too; pass entity_id only for a frame without an entity column, or select "
            f"the rows instead: df[df[{entity_col!r}] == {entity_id!r}]")
    rule = dict(dayfirst=dayfirst, format=timestamp_format)
    with paused_gc():  # millions of acyclic objects: collections would only rescan them
        if messages_col is not None and messages_col in df.columns:
            groups = _nested(df, entity_id, entity_col, conversation_col, messages_col,
                             title_col, rule, role_map)
        else:
            if messages_col not in (None, "messages"):
                _raise_missing(df, [("messages_col", messages_col)])
            groups = _long(df, entity_id, entity_col, conversation_col, role_col, content_col,
                           timestamp_col, title_col, rule, role_map)
        entities, per_entity, options = groups
        return [SeedData.for_conversations(entity_id=entity, conversations=conversations,
                                           process_id=process_id, options=options)
                for entity, conversations in zip(entities, per_entity)]


def _long(df, entity_id, entity_col, conversation_col, role_col, content_col, timestamp_col,
          title_col, rule, role_map):
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
    conv_codes, conv_ids, conv_trimmed = _id_codes(df[conversation_col].to_numpy(dtype=object))
    # Rows without a conversation id form one conversation per entity that fails, named
    # by its rows; code len(conv_ids) stands for "no id".
    n_ids = len(conv_ids)
    key = entity_codes * (n_ids + 1) + np.where(conv_codes < 0, n_ids, conv_codes)
    group, _ = pd.factorize(key)
    group = group.astype(np.int64)

    stamps, options = None, _options(rule, role_map, None)
    if timestamp_col in columns:
        _check_unique_column(df, "timestamp_col", timestamp_col)
        stamps, sort_key, options = _read_column(df[timestamp_col], timestamp_col, rule,
                                                 role_map)
        # A conversation with a message of unknown time keeps its rows' order: moving that
        # message to either end would be a guess.
        undated = np.bincount(group[sort_key == np.iinfo(np.int64).max],
                              minlength=int(group.max()) + 1) > 0
        sort_key = np.where(undated[group], np.arange(len(group)), sort_key)
        order = np.lexsort((sort_key, group))  # stable: equal times keep row order
    else:
        order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    bounds = np.flatnonzero(np.diff(sorted_group)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    ends = np.concatenate((bounds, [len(order)])).tolist()

    row_roles = df[role_col].to_numpy(dtype=object)
    row_contents = df[content_col].to_numpy(dtype=object)
    # Per row: its content's length when validation keeps the message, else -1. Measured
    # in row order, where the texts lie in memory in the order they are visited.
    kept = np.fromiter(map(_kept_length, row_contents), dtype=np.int64, count=len(df))
    kept[~_kept_roles(row_roles, options)] = -1
    kept = kept[order]
    roles = row_roles[order].tolist()
    contents = row_contents[order].tolist()
    times = stamps[order].tolist() if stamps is not None else None
    titles = df[title_col].to_numpy(dtype=object)[order] if title_col in columns else None
    labels = df.index.to_numpy(dtype=object)[order]
    first_rows = order[starts]
    measured = zip(np.minimum.reduceat(kept, starts).tolist(),
                   np.add.reduceat(kept, starts).tolist(),
                   np.maximum.reduceat(kept, starts).tolist())
    per_entity: list[list[dict]] = [[] for _ in entities]
    for start, end, row, (shortest, characters, largest) in zip(starts, ends,
                                                                first_rows.tolist(), measured):
        code = int(conv_codes[row])
        if times is None:
            messages = [{"role": r, "content": c} for r, c in zip(roles[start:end],
                                                                 contents[start:end])]
        else:
            messages = [{"role": r, "content": c, "timestamp": t} for r, c, t in zip(
                roles[start:end], contents[start:end], times[start:end])]
        raw = {"id": conv_ids[code] if code >= 0 else None, "messages": messages,
               "locate": _rows_locator(labels, start)}
        if code >= 0 and shortest >= 0:
            raw[MEASURED] = MeasuredSizes(raw["id"], messages, end - start, characters,
                                          largest)
        if code < 0:
            raw["where"] = f"row {_label(labels[start])}"
        elif conv_trimmed[code]:
            raw["warnings"] = [f"id whitespace trimmed ({conv_trimmed[code]!r})"]
        if titles is not None:
            raw["title"] = _first_text(titles[start:end])
        per_entity[int(entity_codes[row])].append(raw)
    return entities, per_entity, options


def _nested(df, entity_id, entity_col, conversation_col, messages_col, title_col, rule,
            role_map):
    columns = set(df.columns)
    if conversation_col not in columns and conversation_col == "conversation_id":
        conversation_col = "id" if "id" in columns else None
    missing = []
    if entity_id is None and entity_col not in columns:
        missing.append(("entity_col", entity_col))
    if conversation_col is not None and conversation_col not in columns:
        missing.append(("conversation_col", conversation_col))
    if title_col != "title" and title_col not in columns:
        missing.append(("title_col", title_col))
    if missing:
        _raise_missing(df, missing, nested=True)
    _check_unique_column(df, "messages_col", messages_col)
    entity_codes, entities = _entity_codes(df, entity_col, entity_id)
    if conversation_col is not None:
        _check_unique_column(df, "conversation_col", conversation_col)
        conv_codes, conv_ids, conv_trimmed = _id_codes(
            df[conversation_col].to_numpy(dtype=object))
    cells = [cell.tolist() if isinstance(cell, np.ndarray) else cell
             for cell in df[messages_col].tolist()]
    evidence = TimestampEvidence()
    for cell in cells:
        if isinstance(cell, (list, tuple)):
            for message in cell:
                if isinstance(message, dict):
                    evidence.add(message.get("timestamp"))
    options = _options(rule, role_map, evidence.rule(f"column {messages_col!r}", **rule))
    titles = df[title_col].to_numpy(dtype=object) if title_col in columns else None
    labels = df.index.to_numpy(dtype=object)
    per_entity: list[list[dict]] = [[] for _ in entities]
    for row, cell in enumerate(cells):
        label = _label(labels[row])
        raw: dict[str, Any] = {"where": f"row {label}",
                               "locate": _cell_locator(label, messages_col)}
        if cell is not None and not (isinstance(cell, float) and cell != cell):
            raw["messages"] = cell  # validation says what is wrong with anything but a list
        if conversation_col is None:
            raw["id"] = derived_id(cell)
        else:
            code = int(conv_codes[row])
            raw["id"] = conv_ids[code] if code >= 0 else None
            if code >= 0 and conv_trimmed[code]:
                raw["warnings"] = [f"id whitespace trimmed ({conv_trimmed[code]!r})"]
        if titles is not None:
            raw["title"] = _first_text(titles[row:row + 1])
        per_entity[int(entity_codes[row])].append(raw)
    return entities, per_entity, options


def _read_column(values: pd.Series, name: str, rule: dict, role_map):
    """The column's times (aware UTC datetimes; the raw value where it cannot be read, so
    validation warns about it), a sort key (NaT last), and the read options."""
    n = len(values)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = pd.to_datetime(values, utc=True)
        options = _options(rule, role_map, None)
    else:
        raw = values.to_numpy(dtype=object)
        texts = pd.unique(np.asarray([v for v in raw.tolist() if isinstance(v, str)] or [""],
                                     dtype=object))
        evidence = TimestampEvidence()
        for text in texts.tolist():
            evidence.add(text)
        timestamp_rule = evidence.rule(f"column {name!r}", **rule)
        options = _options(rule, role_map, timestamp_rule)
        parsed = _read_values(raw, timestamp_rule)
    micros = _micros(parsed)
    readable = micros != _NAT
    sort_key = np.where(readable, micros, np.iinfo(np.int64).max)
    stamps = np.empty(n, dtype=object)
    stamps[:] = _datetimes(micros)
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        raw = values.to_numpy(dtype=object)
        unread = ~readable & ~pd.isna(raw)
        stamps[unread] = raw[unread]  # validation names the row and warns
    return stamps, sort_key, options


_NAT = np.iinfo(np.int64).min


def _read_values(raw: np.ndarray, rule) -> pd.Series:
    """Times for a column of mixed values: ISO text in bulk, the rest value by value."""
    series = pd.Series(raw, dtype=object)
    parsed = pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
    text = series.map(lambda v: isinstance(v, str))
    if rule.format is None and text.any():
        bulk = pd.to_datetime(series[text], utc=True, errors="coerce", format="ISO8601")
        parsed[text] = bulk
    left = parsed.isna() & series.notna()
    if left.any():
        read: dict[Any, Any] = {}  # each distinct value read once

        def one(value: Any) -> Any:
            try:
                if value not in read:
                    read[value] = read_timestamp(value, rule)
                return read[value]
            except TypeError:  # unhashable (a dict or list in the column): not a time
                return None

        parsed[left] = pd.to_datetime(series[left].map(one), utc=True)
    return parsed


def _kept_length(content: Any) -> int:
    """The length of a message's content if validation keeps it that long (text that is not
    blank; unstorable characters are replaced one for one), else -1."""
    return len(content) if type(content) is str and content and not content.isspace() else -1


def _kept_roles(roles: np.ndarray, options: ReadOptions) -> np.ndarray:
    """Per role value: whether validation keeps a message with it (a role or an alias of
    one, in any case, not one it leaves out)."""
    try:
        codes, names = pd.factorize(roles)
    except TypeError:  # unhashable values (lists, dicts): let validation say what is wrong
        return np.zeros(len(roles), dtype=bool)
    kept = [isinstance(name, str) and options.roles.get(name.strip().lower()) is not None
            for name in names.tolist()]
    return np.asarray(kept + [False], dtype=bool)[codes]  # code -1 (a missing role): False


def _datetimes(micros: np.ndarray) -> list[datetime | None]:
    """Aware UTC datetimes from epoch microseconds (None for _NAT), with C-level maps."""
    missing = micros == _NAT
    micros = np.where(missing, 0, micros)
    seconds, fraction = np.divmod(micros, 1_000_000)
    if not fraction.any() and (seconds >= 0).all():  # the usual case: whole seconds
        out = list(map(datetime.fromtimestamp, seconds.tolist(), repeat(timezone.utc)))
    else:
        out = [_EPOCH + timedelta(microseconds=m) for m in micros.tolist()]
    for position in np.flatnonzero(missing).tolist():
        out[position] = None
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(parsed: pd.Series) -> np.ndarray:
    naive = pd.Series(parsed).dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy().astype("datetime64[us]").view(np.int64)


def _options(rule: dict, role_map, timestamp_rule) -> ReadOptions:
    from ..timestamps import TimestampRule

    timestamps = timestamp_rule or TimestampRule(dayfirst=rule["dayfirst"],
                                                 format=rule["format"])
    return ReadOptions(timestamps=timestamps, role_map=role_map)


def _rows_locator(labels: np.ndarray, start: int):
    return lambda position: f"row {_label(labels[start + position])}"


def _cell_locator(label: str, column: str):
    return lambda position: f"row {label}: {column}[{position}]"


def _first_text(values: np.ndarray) -> str | None:
    for value in values.tolist():
        if isinstance(value, str) and value.strip():
            return value
        if value is not None and not isinstance(value, str) and value == value:
            return str(value)
    return None


def _entity_codes(df: pd.DataFrame, entity_col: str,
                  entity_id: str | None) -> tuple[np.ndarray, list[str]]:
    if entity_col not in df.columns:
        return np.zeros(len(df), dtype=np.int64), [entity_id]
    _check_unique_column(df, "entity_col", entity_col)
    codes, ids, _ = _id_codes(df[entity_col].to_numpy(dtype=object))
    missing = np.flatnonzero(codes < 0)
    if len(missing):
        rows = [_label(df.index[p]) for p in missing[:_MAX_ROWS_LISTED].tolist()]
        more = len(missing) - len(rows)
        count = "1 row (row" if len(missing) == 1 else f"{len(missing):,} rows (rows"
        raise InvalidInputError(
            f"column {entity_col!r} has no entity id (missing or blank) in {count} "
            f"{', '.join(rows)}{f' and {more:,} more' if more > 0 else ''}); fill it or "
            f"drop those rows, e.g. df.dropna(subset=[{entity_col!r}])")
    return codes.astype(np.int64), ids


def _id_codes(raw: np.ndarray) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Codes for ids in order of first appearance; -1 for missing or blank ids.

    Ids are text without surrounding whitespace: ``17``, ``17.0`` and ``" 17 "`` are one id.
    The third list gives, per id, a raw spelling that had whitespace (None if none had).
    """
    try:
        codes, uniques = pd.factorize(raw)
    except TypeError as exc:  # unhashable cells: lists, dicts
        raise InvalidInputError(f"an id column holds values that cannot be ids ({exc})") from exc
    raw_texts = [_id_text(v) for v in uniques.tolist()]
    text_codes, texts = pd.factorize(np.asarray([t.strip() for t in raw_texts], dtype=object))
    texts = texts.tolist()
    trimmed: list[str | None] = [None] * len(texts)
    for raw_text, code in zip(raw_texts, text_codes.tolist()):
        if raw_text != raw_text.strip() and trimmed[code] is None:
            trimmed[code] = raw_text
    blank = np.array([not text for text in texts], dtype=bool)
    remap = np.append(np.where(blank[text_codes], -1, text_codes), -1).astype(np.int64)
    return remap[codes], texts, trimmed


def _id_text(value: Any) -> str:
    """An id cell as every reader reads ids (:func:`~memori_nb.validation.id_text`); what
    no other reader takes (a bool, a fraction) as it prints."""
    text = id_text(value)
    return text if text is not None else str(value)


def _raise_missing(df: pd.DataFrame, missing: list[tuple[str, str]], *,
                   nested: bool = False) -> None:
    names = [repr(name) for _, name in missing]
    quoted = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    noun = "column" if len(names) == 1 else "columns"
    hints = []
    for keyword, name in missing:
        guess = _guess_column(df.columns, keyword)
        hint = f"{keyword}={repr(guess) if guess is not None else chr(39) + '<column>' + chr(39)}"
        if keyword == "entity_col":
            hint += " (or entity_id='...' for a frame of one entity)"
        hints.append(hint)
    layout = ("a nested frame (one row per conversation)" if nested
              else "a long frame (one row per message)")
    raise InvalidInputError(f"{noun} {quoted} not found in {layout} (columns: "
                            f"{_columns(df)}); pass {', '.join(hints)}")


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


def _columns(df: pd.DataFrame) -> str:
    names = [str(column) for column in df.columns]
    shown = ", ".join(names[:_MAX_COLUMNS_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_COLUMNS_LISTED else "")


def _label(label: Any) -> str:
    """A row's index label as the user would type it: ``1532``, ``'a'``, ``(1, 'a')``."""
    if isinstance(label, tuple):
        return f"({', '.join(_label(part) for part in label)})"
    if isinstance(label, np.generic):
        label = label.item()
    return str(label) if isinstance(label, int) and not isinstance(label, bool) else repr(label)
