"""Turn what a user passes as ``conn`` into a DB-API connection and its dialect.

Accepted, as the Memori SDK accepts them and more: a SQLAlchemy URL string, ``Engine``,
``Connection``, ``Session`` or ``sessionmaker``; a DB-API connection (``sqlite3``, psycopg);
or a callable returning any of those. Whatever comes in, memori_nb works on one DB-API
connection of its own and its own transactions, so a batch is written atomically.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, StoreError

DIALECTS = ("sqlite", "postgresql")
# sqlite3 waits this long for another writer's lock before failing.
SQLITE_BUSY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class SqlConnection:
    """An open DB-API connection, its dialect, and how it may be used.

    ``threadsafe`` is False only for a caller's in-memory ``sqlite3`` connection, which
    cannot be reopened elsewhere and may be bound to the thread that made it.
    """

    connection: Any
    dialect: str
    description: str
    threadsafe: bool = True
    close: Callable[[], None] | None = None
    # Opens a new connection like this one, when memori_nb can (not for a caller's own).
    reopen: Callable[[], SqlConnection] | None = None


def is_sql_conn(conn: Any) -> bool:
    """True when ``conn`` names a SQL database rather than DuckDB."""
    if isinstance(conn, str):
        return "://" in conn
    module = type(conn).__module__.split(".")[0]
    if module.lstrip("_") == "duckdb":
        return False
    return module in ("sqlalchemy", "sqlite3", "psycopg", "psycopg2") or callable(conn) or (
        hasattr(conn, "cursor") and hasattr(conn, "commit"))


def open_sql_connection(conn: Any) -> SqlConnection:
    """Open a DB-API connection for ``conn`` (see the module docstring).

    Raises:
        ConfigurationError: ``conn`` is not something memori_nb can use, SQLAlchemy is needed
            and missing, or the database is neither SQLite nor PostgreSQL.
        StoreError: the database cannot be reached.
    """
    if isinstance(conn, str):
        return _from_engine(_create_engine(conn))
    module = type(conn).__module__.split(".")[0]
    if module == "sqlalchemy" or _is_sessionmaker(conn):
        return _from_sqlalchemy(conn)
    if isinstance(conn, sqlite3.Connection):
        return _from_sqlite3(conn)
    if hasattr(conn, "cursor") and hasattr(conn, "commit") and hasattr(conn, "rollback"):
        return SqlConnection(conn, _driver_dialect(conn), f"{module} connection")
    if callable(conn):
        try:
            made = conn()
        except Exception as exc:  # noqa: BLE001 - the caller's factory; say which failed
            raise StoreError(f"the connection factory passed as conn failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        if callable(made) and not isinstance(made, sqlite3.Connection):
            raise ConfigurationError("conn returned another callable; pass a connection, "
                                     "a session or a function that returns one")
        opened = open_sql_connection(made)
        return replace(opened, reopen=lambda: open_sql_connection(conn))
    raise ConfigurationError(
        f"conn must be a DuckDB path or connection, a SQLAlchemy URL, Engine, Session or "
        f"sessionmaker, or a DB-API connection (or a function returning one); "
        f"got {type(conn).__name__}")


def _is_sessionmaker(conn: Any) -> bool:
    return type(conn).__name__ == "sessionmaker" and hasattr(conn, "kw")


def _create_engine(url: str):
    try:
        import sqlalchemy
    except ImportError as exc:
        raise ConfigurationError(
            "a database URL needs SQLAlchemy: pip install 'memori_nb[memori]' "
            "(or pass a sqlite3/psycopg connection)") from exc
    try:
        return sqlalchemy.create_engine(url)
    except Exception as exc:  # noqa: BLE001 - bad URL, missing driver: one clear message
        raise ConfigurationError(f"cannot use database URL {hide_password(url)!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def _from_sqlalchemy(conn: Any) -> SqlConnection:
    if _is_sessionmaker(conn):
        bind = conn.kw.get("bind")
        if bind is None:
            raise ConfigurationError("the sessionmaker passed as conn has no bind; "
                                     "create it as sessionmaker(bind=engine)")
        return _from_sqlalchemy(bind)
    get_bind = getattr(conn, "get_bind", None)     # a Session
    if get_bind is not None:
        return _from_sqlalchemy(get_bind())
    engine = getattr(conn, "engine", conn)          # a Connection has .engine
    return _from_engine(engine)


def _from_engine(engine: Any) -> SqlConnection:
    if type(engine).__name__.startswith("Async"):
        raise ConfigurationError("memori_nb writes through a synchronous SQLAlchemy engine; "
                                 "pass create_engine(...) (or its URL), not an async engine")
    dialect = engine.dialect.name
    _check_dialect(dialect)
    description = hide_password(str(engine.url))
    if dialect == "sqlite" and engine.url.database in (None, "", ":memory:"):
        raise ConfigurationError("an in-memory SQLite URL gives every connection its own "
                                 "empty database; use a file (sqlite:///memori.db) or pass "
                                 "a sqlite3 connection")
    try:
        raw = engine.raw_connection()
    except Exception as exc:  # noqa: BLE001 - driver errors differ; keep the cause
        raise StoreError(f"cannot connect to {description}: {type(exc).__name__}: "
                         f"{exc}") from exc
    connection = raw.driver_connection
    if dialect == "sqlite":
        connection.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SECONDS * 1000)}")
    return SqlConnection(connection, dialect, description, close=raw.close,
                         reopen=lambda: _from_engine(engine))


def _from_sqlite3(conn: sqlite3.Connection) -> SqlConnection:
    """A caller's sqlite3 connection: reopened on its file, so any thread may use it.

    (The Memori SDK 3.3 mistakes a sqlite3.Connection for a factory, being callable.)
    """
    rows = conn.execute("PRAGMA database_list").fetchall()
    path = next((row[2] for row in rows if row[1] == "main"), "")
    if not path:
        return SqlConnection(conn, "sqlite", "sqlite3 in-memory connection", threadsafe=False)
    return _sqlite_file(path)


def _sqlite_file(path: str) -> SqlConnection:
    own = sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS, check_same_thread=False)
    return SqlConnection(own, "sqlite", f"sqlite:///{path}", close=own.close,
                         reopen=lambda: _sqlite_file(path))


def _driver_dialect(conn: Any) -> str:
    module = type(conn).__module__.split(".")[0]
    dialect = {"sqlite3": "sqlite", "psycopg": "postgresql", "psycopg2": "postgresql"}.get(module)
    if dialect is None:
        raise ConfigurationError(f"memori_nb writes Memori's tables to SQLite and PostgreSQL; "
                                 f"a {module} connection is not supported")
    return dialect


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ConfigurationError(f"memori_nb writes Memori's tables to SQLite and PostgreSQL; "
                                 f"this database is {dialect}")


def hide_password(url: str) -> str:
    """The URL without its password, in the user part or the query (``?password=``): it
    ends up in reprs, errors and the CLI's summary."""
    url = re.sub(r"([?&](?:ssl)?password=)[^&]*", r"\1***", url, flags=re.I)
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def conn_for_display(conn: Any) -> str:
    """``conn`` as a repr or an error may show it: a path or URL (without its password)
    quoted, any other object by its type's name."""
    return (repr(hide_password(str(conn))) if isinstance(conn, (str, Path))
            else type(conn).__name__)
