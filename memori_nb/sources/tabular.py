"""Parquet and CSV files, read through DuckDB: one row per message (long format), or one
row per conversation with a ``messages`` list column (Hugging Face chat datasets).

Rows are streamed in batches, so a file of millions of conversations never sits in Python
memory at once. The reader only groups rows into raw conversations (each message named by
its row); :mod:`memori_nb.validation` judges them (roles, content, timestamps), as for every
source.

**Long format** (``conversation_id``, ``role``, ``content``, ``timestamp``?, ``entity_id``?).
The order rows come in:

* entities in the order they first appear in the file,
* within an entity, conversations in the order they first appear,
* within a conversation, messages by timestamp (when there is a timestamp column; rows
  without a readable one come after those with one), ties in file order.

A first pass over the ids tells whether the file is already grouped (each conversation's
rows consecutive, and each entity's): then the rows are streamed straight in file order,
with no sort. Otherwise DuckDB regroups them with a sort that works within
``memory_limit`` and spills to a temporary folder (removed afterwards). Rows are numbered
from 1 in file order, header excluded ("row 3" is the third data row); problems name them.

**Messages column** (``messages``: a list of ``{role, content, timestamp?}``, or ShareGPT's
``conversations`` of ``{from, value}``; optional ``conversation_id`` or ``id``, ``title``,
``created_at``, ``entity_id``). Rows are read in file order; a row without an id gets a
stable one from its messages (:func:`memori_nb.validation.derived_id`).

Timestamps: date and time columns are taken as they are (naive ones as UTC), strict ISO 8601
text is read by DuckDB (exactly as Python reads it, only faster); other text and numbers are
read by :func:`memori_nb.timestamps.read_timestamp` under one rule for the column (epoch
seconds or milliseconds told apart by size, RFC 2822 ...). Numeric day/month dates
(``12.01.2024, 13:42:02``) are read day first when some value of the column proves it, and
``dayfirst=`` / ``timestamp_format=`` is asked for when none does (a DuckDB query over the
column's values decides, before streaming). A value that cannot be read is a warning.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from ..errors import InvalidInputError
from ..models import SeedData
from ..timestamps import TimestampEvidence, read_timestamp
from ..validation import Invalid, ReadOptions
from ._runs import add_counted, read_options, seed_runs
from .jsonl import decode_json, raw_conversation

TABLE_FORMATS = ("parquet", "csv")
# Rows fetched at a time: a batch is held twice while it is numbered, and a row can be a
# pasted document (realistic messages: mean ~430 characters, a tail to hundreds of KB).
DEFAULT_BATCH_ROWS = 10_000
# DuckDB's working memory for the sort; beyond it, it spills to disk.
DEFAULT_MEMORY_LIMIT = "256MB"
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}
_FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV"}
_UTC = timezone.utc
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
# A value starting with a numeric day/month date, and its day/month part (RE2: no
# back-references, so timestamps.TimestampEvidence re-checks each example).
_DATE_START = r"^\s*(\d{1,2}[./-]\d{1,2})[./-]\d"
# Strict ISO 8601, which DuckDB's cast reads exactly as Python's fromisoformat does.
_ISO = (r"\d{4}-\d{2}-\d{2}([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?)?"
        r"(Z|[+-]\d{2}(:?\d{2})?)?")


def table_format(path: str | Path) -> str | None:
    """``"parquet"`` or ``"csv"`` from a file name's extension (``.csv.gz`` too), else None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zst"):
        suffixes = suffixes[:-1]
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


def read_table(path: str | Path, *, format: str | None = None, entity_id: str | None = None,
               entity_col: str = "entity_id", conversation_col: str = "conversation_id",
               role_col: str = "role", content_col: str = "content",
               timestamp_col: str = "timestamp", messages_col: str = "messages",
               batch_rows: int = DEFAULT_BATCH_ROWS,
               memory_limit: str = DEFAULT_MEMORY_LIMIT, dayfirst: bool | None = None,
               timestamp_format: str | None = None,
               role_map: Mapping[str, str | None] | None = None) -> Iterator[SeedData]:
    """Stream a Parquet or CSV file of messages as one :class:`SeedData` per entity.

    Args:
        path: the ``.parquet`` or ``.csv`` file (a CSV has a header row).
        format: ``"parquet"`` or ``"csv"``; by default from the extension.
        entity_id: the entity of every row when the file has no entity column, or of rows
            whose entity is empty.
        entity_col, conversation_col, role_col, content_col, timestamp_col: the column
            names, for files that name them differently. The timestamp column is optional.
        messages_col: the list column of a file with one conversation per row, used when
            the file has no role and content columns (``conversations`` too, ShareGPT's).
        batch_rows: rows fetched from DuckDB at a time.
        memory_limit: DuckDB's working memory for the sort (it spills to disk beyond it).
        dayfirst: True when numeric dates are day/month/year, False for month/day/year;
            by default decided from the column's values.
        timestamp_format: a ``strptime`` format the text timestamps follow instead.
        role_map: more role names, e.g. ``{"agent": "assistant", "note": None}`` (None
            leaves such messages out).

    Returns:
        An iterator of :class:`SeedData` (one per run of an entity's rows, in the order
        described in the module docstring), each with a lazy ``conversations`` iterator of
        raw conversation dicts (validated when seeding: an empty message or an unreadable
        timestamp is a warning, an unknown role fails the conversation naming the row), or
        :class:`Invalid` for rows with no conversation id.

    Raises:
        InvalidInputError: the file is missing or unreadable in that format; a column is
            missing (the message lists the columns present and the keyword to rename); a
            row has no entity and no ``entity_id`` was given (when that row is reached);
            the column's dates could be day/month or month/day and nothing says which
            (:class:`~memori_nb.timestamps.AmbiguousTimestampsError`).

    Example:
        >>> import duckdb, tempfile, pathlib
        >>> from memori_nb.validation import check_conversations
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "messages.csv"
        >>> _ = duckdb.execute(f"COPY (SELECT 'c1' AS conversation_id, 'user' AS role, "
        ...                    f"'Hi' AS content) TO '{path}' (HEADER)")
        >>> seed = next(read_table(path, entity_id="user-1"))
        >>> [m.content for m in next(check_conversations(seed))[1].messages]
        ['Hi']
    """
    path = Path(path)
    fmt = format or table_format(path)
    if fmt not in TABLE_FORMATS:
        raise InvalidInputError(
            f"{path}: cannot tell the table format from the extension; pass "
            f"format='parquet' or format='csv' (--format)" if format is None else
            f"format must be one of {', '.join(TABLE_FORMATS)}, got {format!r}")
    if entity_id is not None and (not isinstance(entity_id, str) or not entity_id.strip()):
        raise InvalidInputError(f"entity_id must be a non-empty string, got {entity_id!r}")
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    spill = tempfile.mkdtemp(prefix="memori_nb-sort-")
    conn = duckdb.connect()
    try:
        conn.execute(f"SET memory_limit = '{_sql_text(memory_limit)}'")
        conn.execute(f"SET temp_directory = '{_sql_text(spill)}'")
        conn.execute("SET TimeZone = 'UTC'")  # naive timestamps are taken as UTC
        conn.execute("SET enable_progress_bar = false")
        source, number = _source(fmt, path)
        try:
            described = conn.execute(f"DESCRIBE SELECT * FROM {source}", [str(path)])
            columns = {row[0]: row[1] for row in described.fetchall()}
        except duckdb.Error as exc:
            raise InvalidInputError(f"{path}: not a readable {_FORMAT_NAMES[fmt]} file "
                                    f"({_first_line(exc)})") from exc
        if messages_col not in columns and messages_col == "messages":
            messages_col = "conversations"  # ShareGPT's name
        per_row = (messages_col in columns
                   and (role_col not in columns or content_col not in columns))
        if per_row:
            sql, texts = _row_expressions(path, columns, entity_id=entity_id,
                                          entity_col=entity_col, messages_col=messages_col,
                                          conversation_col=conversation_col)
        else:
            sql, texts = _expressions(path, columns, entity_id=entity_id,
                                      entity_col=entity_col, conversation_col=conversation_col,
                                      role_col=role_col, content_col=content_col,
                                      timestamp_col=timestamp_col,
                                      iso_in_sql=timestamp_format is None)
        try:
            evidence = None
            if dayfirst is None and timestamp_format is None:
                evidence = _evidence(conn, source, path, texts)
            options = read_options(evidence, str(path), dayfirst=dayfirst,
                                   timestamp_format=timestamp_format, role_map=role_map)
            if per_row:
                scattered = 0
                result = conn.execute(f"SELECT {', '.join(sql.values())} FROM {source}",
                                      [str(path)])
            else:
                [(scattered,)] = conn.execute(_grouped_query(source, number, sql),
                                              [str(path)]).fetchall()
                if scattered:
                    result = conn.execute(_sorted_query(source, number, sql), [str(path)] * 2)
                else:
                    result = conn.execute(_rows_query(source, sql), [str(path)])
        except duckdb.Error as exc:
            raise InvalidInputError(f"{path}: DuckDB could not read it ({_first_line(exc)})") \
                from exc
    except BaseException:
        _close(conn, spill)
        raise
    batches = _batches(result, conn, spill, batch_rows, path, numbered=bool(scattered))
    # A stream dropped before it was read never runs _batches' cleanup: do it when collected.
    weakref.finalize(batches, _close, conn, spill)
    if per_row:
        return seed_runs(_row_conversations(batches, entity_id, path, options), options)
    return seed_runs(_conversations(batches, entity_id, path, options), options)


def _source(fmt: str, path: Path) -> tuple[str, str]:
    """The table function reading the file, and its row-number expression (file order)."""
    if fmt == "parquet":
        return "read_parquet(?, file_row_number = true)", "file_row_number + 1"
    # Every CSV column as text: ids such as "007" keep their zeros, and values are checked
    # here rather than guessed by the sniffer. row_number() follows file order.
    return "read_csv(?, header = true, all_varchar = true)", "row_number() OVER ()"


def _check_columns(path: Path, columns: dict[str, str], wanted: list[tuple[str, str]]) -> None:
    """Raise naming the missing columns, the columns present and the keywords to rename."""
    missing = [(keyword, name) for keyword, name in wanted if name not in columns]
    if missing:
        names = ", ".join(repr(name) for _, name in missing)
        how = "; ".join(f"{keyword}=... (--{keyword.replace('_', '-')})"
                        for keyword, _ in missing)
        extra = (" or pass entity_id=... (--entity-id) for a file of one entity"
                 if any(keyword == "entity_col" for keyword, _ in missing) else "")
        raise InvalidInputError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {names}; the file has "
            f"{', '.join(columns) or 'no columns'}. Name the columns with {how}{extra}")


def _expressions(path: Path, columns: dict[str, str], *, entity_id: str | None,
                 entity_col: str, conversation_col: str, role_col: str, content_col: str,
                 timestamp_col: str, iso_in_sql: bool) -> tuple[dict[str, str], list[str]]:
    """SQL for each field of the long format, after checking the columns exist; and the
    text expressions whose values decide the timestamp rule."""
    wanted = [("conversation_col", conversation_col), ("role_col", role_col),
              ("content_col", content_col)]
    if entity_id is None or entity_col != "entity_id":
        wanted.insert(0, ("entity_col", entity_col))
    if timestamp_col != "timestamp":
        wanted.append(("timestamp_col", timestamp_col))
    _check_columns(path, columns, wanted)
    ts, raw, texts = "NULL", "NULL", []
    if timestamp_col in columns:
        ts, raw = _timestamp_sql(path, timestamp_col, columns[timestamp_col],
                                 iso_in_sql=iso_in_sql)
        if columns[timestamp_col] == "VARCHAR":
            texts.append(_ident(timestamp_col))
    return {"e": _text_column(entity_col, columns),
            "c": _id_sql(conversation_col, columns),
            "role": f"CAST({_ident(role_col)} AS VARCHAR)",
            "content": f"CAST({_ident(content_col)} AS VARCHAR)",
            "ts": ts, "raw": raw}, texts


def _row_expressions(path: Path, columns: dict[str, str], *, entity_id: str | None,
                     entity_col: str, messages_col: str, conversation_col: str
                     ) -> tuple[dict[str, str], list[str]]:
    """SQL for a file with one conversation per row (a messages list column)."""
    if entity_id is None or entity_col != "entity_id":
        _check_columns(path, columns, [("entity_col", entity_col)])
    kind = columns[messages_col]
    if not (kind.endswith("[]") or kind == "VARCHAR"):
        raise InvalidInputError(f"{path}: column {messages_col!r} has type {kind}; a messages "
                                f"column holds a list of {{role, content}} per row")
    id_col = conversation_col if conversation_col in columns else "id"
    texts = []
    if kind.startswith("STRUCT") and '"timestamp" VARCHAR' in kind:
        texts.append(f"unnest({_ident(messages_col)}).timestamp")
    if columns.get("created_at") == "VARCHAR":
        texts.append('"created_at"')
    return {"e": _text_column(entity_col, columns),
            "id": _text_column(id_col, columns),
            "messages": _ident(messages_col),
            "title": _ident("title") if "title" in columns else "NULL",
            "created_at": _ident("created_at") if "created_at" in columns else "NULL"}, texts


def _text_column(name: str, columns: dict[str, str]) -> str:
    return _id_sql(name, columns) if name in columns else "CAST(NULL AS VARCHAR)"


def _id_sql(name: str, columns: dict[str, str]) -> str:
    """An id column as text, as every reader reads ids: a whole number without ".0" (a
    DOUBLE 17.0 is the id "17"). Whitespace is trimmed later, by validation, with a warning."""
    col = _ident(name)
    if columns.get(name) in ("DOUBLE", "FLOAT", "DECIMAL") or str(
            columns.get(name, "")).startswith("DECIMAL"):
        return (f"CASE WHEN {col} = trunc({col}) THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) "
                f"ELSE CAST({col} AS VARCHAR) END")
    return f"CAST({col} AS VARCHAR)"


def _evidence(conn: Any, source: str, path: Path, texts: list[str]) -> TimestampEvidence:
    """What the text timestamps of the file say about day/month order: one query, counting
    the values that start with a numeric date by their day/month part."""
    evidence = TimestampEvidence()
    if not texts:
        return evidence
    values = " UNION ALL ".join(f"SELECT CAST({text} AS VARCHAR) AS v FROM {source}"
                                for text in texts)
    groups = conn.execute(f"""
        SELECT regexp_extract(v, '{_DATE_START}', 1) AS day_month, count(*), min(v)
        FROM ({values}) WHERE regexp_matches(v, '{_DATE_START}')
        GROUP BY day_month ORDER BY day_month""", [str(path)] * len(texts)).fetchall()
    for _, count, example in groups:
        add_counted(evidence, example, count)
    return evidence


def _grouped_query(source: str, number: str, sql: dict[str, str]) -> str:
    """How many conversations (and entities) are not on consecutive rows: 0 when the file
    is already grouped and can be streamed in file order, with no sort."""
    return f"""
        WITH conversations AS (
            SELECT e, min(n) AS first_row, max(n) AS last_row, count(*) AS rows
            FROM (SELECT {sql['e']} AS e, {sql['c']} AS c, {number} AS n FROM {source})
            GROUP BY e, c),
        entities AS (
            SELECT max(last_row) - min(first_row) + 1 <> sum(rows) AS scattered
            FROM conversations GROUP BY e)
        SELECT (SELECT count(*) FROM conversations WHERE last_row - first_row + 1 <> rows)
             + (SELECT count(*) FROM entities WHERE scattered)
    """


def _rows_query(source: str, sql: dict[str, str]) -> str:
    """The rows in file order (a streaming scan)."""
    return (f"SELECT {sql['e']}, {sql['c']}, {sql['role']}, {sql['content']}, {sql['ts']}, "
            f"{sql['raw']} FROM {source}")


def _sorted_query(source: str, number: str, sql: dict[str, str]) -> str:
    """The rows regrouped: entities, then their conversations, in first-appearance order.

    Two scans of the file: the first finds where each conversation and entity first appears
    (one small row per conversation); the second brings the messages, sorted out of core.
    """
    return f"""
        WITH rows AS (
            SELECT {sql['e']} AS e, {sql['c']} AS c, {sql['role']} AS role,
                   {sql['content']} AS content, {sql['ts']} AS ts, {sql['raw']} AS raw,
                   {number} AS n
            FROM {source}),
        firsts AS (
            SELECT e, c, min(n) AS conversation_first
            FROM (SELECT {sql['e']} AS e, {sql['c']} AS c, {number} AS n FROM {source})
            GROUP BY e, c),
        ranked AS (
            SELECT e, c, conversation_first,
                   min(conversation_first) OVER (PARTITION BY e) AS entity_first
            FROM firsts)
        SELECT rows.e, rows.c, role, content, ts, raw, n
        FROM rows JOIN ranked
          ON rows.e IS NOT DISTINCT FROM ranked.e AND rows.c IS NOT DISTINCT FROM ranked.c
        ORDER BY entity_first, conversation_first, n
    """


def _timestamp_sql(path: Path, column: str, sql_type: str, *, iso_in_sql: bool
                   ) -> tuple[str, str]:
    """The timestamp column as SQL: ``(ts, raw)``.

    ``ts``: epoch seconds of what DuckDB reads exactly as Python would: date/time columns,
    and strict ISO 8601 text (vectorised, much faster than reading it row by row). ``raw``:
    every other value as it is, read in Python under the column's rule (numbers, day/month
    dates ...), or left for validation to warn about (``infinity``, year 10000).
    """
    col = _ident(column)
    kind = sql_type.upper()
    if kind.startswith(_NUMERIC):
        return "NULL", f"CAST({col} AS DOUBLE)"  # seconds or milliseconds: told apart in Python
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        moment = col
    elif kind == "VARCHAR":
        if not iso_in_sql:
            return "NULL", col
        moment = (f"CASE WHEN regexp_full_match({col}, '{_ISO}') "
                  f"THEN try_cast({col} AS TIMESTAMPTZ) END")
    else:
        raise InvalidInputError(f"{path}: column {column!r} has type {sql_type}, not a date "
                                f"and time; name the timestamp column with timestamp_col=... "
                                f"(--timestamp-col)")
    ts = f"CASE WHEN year({moment}) BETWEEN 1 AND 9999 THEN epoch({moment}) END"
    return ts, f"CASE WHEN ({ts}) IS NULL THEN CAST({col} AS VARCHAR) END"


def _batches(result: Any, conn: Any, spill: str, batch_rows: int, path: Path, *,
             numbered: bool) -> Iterator[list[tuple]]:
    """The result rows, ``batch_rows`` at a time; closes DuckDB when done.

    Rows of a streamed scan come in file order and are numbered here (a row number in SQL
    would make DuckDB hold the whole file); a sorted result carries its numbers.
    """
    try:
        start = 1
        while batch := result.fetchmany(batch_rows):
            if not numbered:
                batch = [(*row, n) for n, row in enumerate(batch, start)]
                start += len(batch)
            yield batch
    except duckdb.Error as exc:
        raise InvalidInputError(f"{path}: DuckDB could not read it ({_first_line(exc)})") \
            from exc
    finally:
        _close(conn, spill)


def _close(conn: Any, spill: str) -> None:
    """Close the reading connection and remove its spill folder (safe to call twice)."""
    conn.close()
    shutil.rmtree(spill, ignore_errors=True)


def _conversations(batches: Iterator[list[tuple]], default_entity: str | None, path: Path,
                   options: ReadOptions) -> Iterator[tuple[tuple[str, None], dict | Invalid]]:
    """``((entity_id, None), raw conversation | Invalid)`` per conversation, from rows that
    come grouped by entity and conversation, in file order within a conversation.

    The per-row loop is the hot path of a million-conversation file: one tuple unpack, a
    comparison with the previous row, reading the timestamp, an order check, one dict.
    """
    utc, from_epoch, read, rule = _UTC, datetime.fromtimestamp, read_timestamp, options.timestamps
    entity = cid = None
    first_row = 0
    messages: list[dict] = []
    moments: list[datetime | None] = []
    latest: datetime | None = None
    undated = unordered = False
    last_entity, index = None, 0
    for batch in batches:
        for e, c, role, content, ts, raw, n in batch:
            if c != cid or e != entity or not first_row:
                if first_row:
                    owner = _owner(entity, default_entity, first_row, path)
                    if owner != last_entity:
                        last_entity, index = owner, 0
                    yield (owner, None), _finish(cid, messages, moments, first_row, index,
                                                 unordered)
                    index += 1
                entity, cid, first_row = e, c, n
                messages, moments = [], []
                latest, undated, unordered = None, False, False
            if ts is not None:
                stamp = moment = from_epoch(ts, utc)
            elif raw is None:
                stamp = moment = None
            else:
                moment = read(raw, rule)
                stamp = moment if moment is not None else raw  # unreadable: a warning
            if moment is None:
                undated = True
            elif undated or (latest is not None and moment < latest):
                unordered = True  # a message earlier than one before it in the file
            else:
                latest = moment
            moments.append(moment)
            messages.append({"role": role, "content": content, "timestamp": stamp,
                             "where": f"row {n}"})
    if first_row:
        owner = _owner(entity, default_entity, first_row, path)
        yield (owner, None), _finish(cid, messages, moments, first_row,
                                     index if owner == last_entity else 0, unordered)


def _owner(entity: str | None, default_entity: str | None, row: int, path: Path) -> str:
    if entity is not None and entity.strip():
        return entity
    if default_entity is None:
        raise InvalidInputError(f"{path}: row {row} has no entity: pass entity_id=... "
                                f"(--entity-id) for rows without one")
    return default_entity


def _finish(cid: str | None, messages: list[dict], moments: list[datetime | None],
            first_row: int, index: int, unordered: bool) -> dict | Invalid:
    if cid is None:  # rows with no conversation id
        rows = [m["where"] for m in messages]
        listed = ", ".join(r.removeprefix("row ") for r in rows[:5]) + (
            ", ..." if len(rows) > 5 else "")
        many = len(rows) > 1
        return Invalid(conversation_id=f"row {first_row}", index=index, reason=(
            f"{len(rows)} row{'s' if many else ''} with no conversation id "
            f"(row{'s' if many else ''} {listed})"))
    # By time, stable (ties keep file order); a conversation with a message of unknown time
    # keeps file order, as moving that message to either end would be a guess.
    if unordered and all(moment is not None for moment in moments):
        order = sorted(range(len(messages)), key=lambda i: (
            moments[i] is None, moments[i].timestamp() if moments[i] is not None else 0.0))
        messages = [messages[i] for i in order]
    return {"id": cid, "messages": messages}


def _row_conversations(batches: Iterator[list[tuple]], default_entity: str | None,
                       path: Path, options: ReadOptions
                       ) -> Iterator[tuple[tuple[str, None], dict | Invalid]]:
    """``((entity_id, None), raw conversation | Invalid)`` per row of a messages-column file."""
    for batch in batches:
        for e, cid, messages, title, created_at, n in batch:
            owner = _owner(e, default_entity, n, path)
            if isinstance(messages, str):  # JSON text, e.g. in a CSV
                messages, problem = decode_json(messages)
                if problem is not None:
                    yield (owner, None), Invalid(conversation_id=f"row {n}", index=0,
                                                 reason=f"row {n}: messages: {problem}")
                    continue
            record = {"id": cid, "messages": messages, "title": title,
                      "created_at": created_at}
            raw = raw_conversation(record, f"row {n}", options.timestamps)
            if isinstance(raw, str):
                raw = Invalid(conversation_id=f"row {n}", index=0, reason=f"row {n}: {raw}")
            yield (owner, None), raw


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_text(text: str) -> str:
    return str(text).replace("'", "''")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
