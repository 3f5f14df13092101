"""Parquet and CSV files in long format (one row per message), read through DuckDB.

Rows are streamed in batches, so a file of millions of conversations never sits in Python
memory at once. The order they come in:

* entities in the order they first appear in the file,
* within an entity, conversations in the order they first appear,
* within a conversation, messages by timestamp (when there is a timestamp column; rows
  without one come after those with one), ties in file order.

A first pass over the ids tells whether the file is already grouped (each conversation's
rows consecutive, and each entity's): then the rows are streamed straight in file order,
with no sort. Otherwise DuckDB regroups them with a sort that works within
``memory_limit`` and spills to a temporary folder (removed afterwards). Rows are numbered
from 1 in file order, header excluded ("row 3" is the third data row); problems name them.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from ..errors import InvalidInputError
from ..models import ROLES, Conversation, Message, SeedData
from ..validation import Invalid
from ._runs import seed_runs

TABLE_FORMATS = ("parquet", "csv")
DEFAULT_BATCH_ROWS = 100_000
# DuckDB's working memory for the sort; beyond it, it spills to disk.
DEFAULT_MEMORY_LIMIT = "256MB"
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}
_FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV"}
_ROLES = frozenset(ROLES)
_MAX_PROBLEMS_LISTED = 3
_UTC = timezone.utc
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")


def table_format(path: str | Path) -> str | None:
    """``"parquet"`` or ``"csv"`` from a file name's extension (``.csv.gz`` too), else None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zst"):
        suffixes = suffixes[:-1]
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


def read_table(path: str | Path, *, format: str | None = None, entity_id: str | None = None,
               entity_col: str = "entity_id", conversation_col: str = "conversation_id",
               role_col: str = "role", content_col: str = "content",
               timestamp_col: str = "timestamp", batch_rows: int = DEFAULT_BATCH_ROWS,
               memory_limit: str = DEFAULT_MEMORY_LIMIT) -> Iterator[SeedData]:
    """Stream a Parquet or CSV file of messages as one :class:`SeedData` per entity.

    Args:
        path: the ``.parquet`` or ``.csv`` file (a CSV has a header row).
        format: ``"parquet"`` or ``"csv"``; by default from the extension.
        entity_id: the entity of every row when the file has no entity column, or of rows
            whose entity is empty.
        entity_col, conversation_col, role_col, content_col, timestamp_col: the column
            names, for files that name them differently. The timestamp column is optional.
        batch_rows: rows fetched from DuckDB at a time.
        memory_limit: DuckDB's working memory for the sort (it spills to disk beyond it).

    Returns:
        An iterator of :class:`SeedData` (one per run of an entity's rows, in the order
        described in the module docstring), each with a lazy ``conversations`` iterator of
        :class:`Conversation` or, for a conversation with an empty content, an unknown role
        or a bad timestamp, :class:`Invalid` naming the rows. Timestamps are timezone-aware
        UTC datetimes (naive values are taken as UTC; numbers as Unix epoch seconds).

    Raises:
        InvalidInputError: the file is missing or unreadable in that format; a column is
            missing (the message lists the columns present and the keyword to rename); a
            row has no entity and no ``entity_id`` was given (when that row is reached).

    Example:
        >>> import duckdb, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "messages.csv"
        >>> _ = duckdb.execute(f"COPY (SELECT 'c1' AS conversation_id, 'user' AS role, "
        ...                    f"'Hi' AS content) TO '{path}' (HEADER)")
        >>> seed = next(read_table(path, entity_id="user-1"))
        >>> [m.content for m in next(iter(seed.conversations)).messages]
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
        conn.execute("SET TimeZone = 'UTC'")  # naive timestamp strings are taken as UTC
        conn.execute("SET enable_progress_bar = false")
        source, number = _source(fmt, path)
        try:
            described = conn.execute(f"DESCRIBE SELECT * FROM {source}", [str(path)])
            columns = {row[0]: row[1] for row in described.fetchall()}
        except duckdb.Error as exc:
            raise InvalidInputError(f"{path}: not a readable {_FORMAT_NAMES[fmt]} file "
                                    f"({_first_line(exc)})") from exc
        sql = _expressions(path, columns, entity_id=entity_id, entity_col=entity_col,
                           conversation_col=conversation_col, role_col=role_col,
                           content_col=content_col, timestamp_col=timestamp_col)
        try:
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
    return seed_runs(_conversations(batches, entity_id, path))


def _source(fmt: str, path: Path) -> tuple[str, str]:
    """The table function reading the file, and its row-number expression (file order)."""
    if fmt == "parquet":
        return "read_parquet(?, file_row_number = true)", "file_row_number + 1"
    # Every CSV column as text: ids such as "007" keep their zeros, and values are checked
    # here rather than guessed by the sniffer. row_number() follows file order.
    return "read_csv(?, header = true, all_varchar = true)", "row_number() OVER ()"


def _expressions(path: Path, columns: dict[str, str], *, entity_id: str | None,
                 entity_col: str, conversation_col: str, role_col: str, content_col: str,
                 timestamp_col: str) -> dict[str, str]:
    """SQL for each field, after checking the columns exist."""
    wanted = [("conversation_col", conversation_col), ("role_col", role_col),
              ("content_col", content_col)]
    if entity_id is None or entity_col != "entity_id":
        wanted.insert(0, ("entity_col", entity_col))
    if timestamp_col != "timestamp":
        wanted.append(("timestamp_col", timestamp_col))
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
    if timestamp_col in columns:
        moment, bad = _timestamp_sql(path, timestamp_col, columns[timestamp_col])
    else:
        moment, bad = "CAST(NULL AS TIMESTAMP)", "CAST(NULL AS VARCHAR)"
    return {"e": f"CAST({_ident(entity_col)} AS VARCHAR)" if entity_col in columns
            else "CAST(NULL AS VARCHAR)",
            "c": f"CAST({_ident(conversation_col)} AS VARCHAR)",
            "role": f"CAST({_ident(role_col)} AS VARCHAR)",
            "content": f"CAST({_ident(content_col)} AS VARCHAR)",
            "ts": f"epoch({moment})", "bad_ts": bad}


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
            f"{sql['bad_ts']} FROM {source}")


def _sorted_query(source: str, number: str, sql: dict[str, str]) -> str:
    """The rows regrouped: entities, then their conversations, in first-appearance order.

    Two scans of the file: the first finds where each conversation and entity first appears
    (one small row per conversation); the second brings the messages, sorted out of core.
    """
    return f"""
        WITH rows AS (
            SELECT {sql['e']} AS e, {sql['c']} AS c, {sql['role']} AS role,
                   {sql['content']} AS content, {sql['ts']} AS ts, {sql['bad_ts']} AS bad_ts,
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
        SELECT rows.e, rows.c, role, content, ts, bad_ts, n
        FROM rows JOIN ranked
          ON rows.e IS NOT DISTINCT FROM ranked.e AND rows.c IS NOT DISTINCT FROM ranked.c
        ORDER BY entity_first, conversation_first, n
    """


def _timestamp_sql(path: Path, column: str, sql_type: str) -> tuple[str, str]:
    """A naive-UTC TIMESTAMP expression for the column, and the text of unusable values."""
    col = _ident(column)
    kind = sql_type.upper()
    if kind in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        moment = f"timezone('UTC', {col})"
    elif kind.startswith("TIMESTAMP") or kind == "DATE":
        moment = f"CAST({col} AS TIMESTAMP)"
    elif kind.startswith(_NUMERIC):
        moment = f"try(timezone('UTC', to_timestamp(CAST({col} AS DOUBLE))))"
    elif kind == "VARCHAR":
        moment = (f"coalesce(timezone('UTC', try_cast({col} AS TIMESTAMPTZ)), "
                  f"try(timezone('UTC', to_timestamp(try_cast({col} AS DOUBLE)))))")
    else:
        raise InvalidInputError(f"{path}: column {column!r} has type {sql_type}, not a date "
                                f"and time; name the timestamp column with timestamp_col=... "
                                f"(--timestamp-col)")
    bad = f"CASE WHEN {col} IS NOT NULL AND ({moment}) IS NULL THEN CAST({col} AS VARCHAR) END"
    return moment, bad


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


def _conversations(batches: Iterator[list[tuple]], default_entity: str | None,
                   path: Path) -> Iterator[tuple[tuple[str, None], Conversation | Invalid]]:
    """``((entity_id, None), Conversation | Invalid)`` per conversation, from rows that come
    grouped by entity and conversation, in file order within a conversation.

    The per-row loop is the hot path of a million-conversation file: one tuple unpack, a
    comparison with the previous row, an order check on the timestamp, one Message.
    """
    utc, from_epoch, roles = _UTC, datetime.fromtimestamp, _ROLES
    entity = cid = None
    first_row = 0
    messages: list[Message] = []
    problems: list[str] = []
    latest, undated, unordered = float("-inf"), False, False
    last_entity, index = None, 0
    for batch in batches:
        for e, c, role, content, ts, bad_ts, n in batch:
            if c != cid or e != entity or not first_row:
                if first_row:
                    owner = _owner(entity, default_entity, first_row, path)
                    if owner != last_entity:
                        last_entity, index = owner, 0
                    yield (owner, None), _finish(cid, messages, problems, first_row, index,
                                                 unordered)
                    index += 1
                entity, cid, first_row = e, c, n
                messages, problems = [], []
                latest, undated, unordered = float("-inf"), False, False
            if ts is None:
                undated = True
            elif ts < latest or undated:
                unordered = True  # a message earlier than one before it in the file
            else:
                latest = ts
            if c is not None and role in roles and content and bad_ts is None \
                    and not content.isspace():
                messages.append(Message(role=role, content=content, timestamp=None
                                        if ts is None else from_epoch(ts, utc)))
            else:
                problems.append(_row_problem(c, role, content, bad_ts, n))
    if first_row:
        owner = _owner(entity, default_entity, first_row, path)
        yield (owner, None), _finish(cid, messages, problems, first_row,
                                     index if owner == last_entity else 0, unordered)


def _owner(entity: str | None, default_entity: str | None, row: int, path: Path) -> str:
    if entity is not None:
        return entity
    if default_entity is None:
        raise InvalidInputError(f"{path}: row {row} has no entity: pass entity_id=... "
                                f"(--entity-id) for rows without one")
    return default_entity


def _row_problem(cid: str | None, role: Any, content: Any, bad_ts: Any, n: int) -> str:
    if cid is None:
        return str(n)
    if not isinstance(role, str) or role not in _ROLES:
        return (f"row {n}: role {role!r} is not one of {', '.join(ROLES)}"
                if role is not None else f"row {n}: role is empty")
    if bad_ts is not None:
        return f"row {n}: timestamp {bad_ts!r} is not a date and time"
    return f"row {n}: content is empty"


def _finish(cid: str | None, messages: list[Message], problems: list[str], first_row: int,
            index: int, unordered: bool) -> Conversation | Invalid:
    if cid is None:  # problems holds the row numbers
        listed = ", ".join(problems[:5]) + (", ..." if len(problems) > 5 else "")
        many = len(problems) > 1
        return Invalid(conversation_id=f"row {first_row}", index=index, reason=(
            f"{len(problems)} row{'s' if many else ''} with no conversation id "
            f"(row{'s' if many else ''} {listed})"))
    if problems:
        more = len(problems) - _MAX_PROBLEMS_LISTED
        listed = "; ".join(problems[:_MAX_PROBLEMS_LISTED])
        return Invalid(conversation_id=cid, index=index, reason=(
            f"conversation {cid!r}: {listed}" + (f"; and {more} more" if more > 0 else "")))
    if unordered:  # by time; stable, so ties keep file order; undated messages go last
        messages.sort(key=_by_time)
    return Conversation(id=cid, messages=tuple(messages))


def _by_time(message: Message) -> tuple[bool, float]:
    return (message.timestamp is None,
            message.timestamp.timestamp() if message.timestamp is not None else 0.0)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_text(text: str) -> str:
    return str(text).replace("'", "''")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
