"""Stores: where a run's results, its ledger and the memories are written.

- :class:`DuckDBStore`: the embedded default, for analysis (a DuckDB path, ``":memory:"`` or
  a DuckDB connection).
- :class:`SqlStore`: Memori's own tables in SQLite or PostgreSQL, which an app's Memori SDK
  recalls from (a SQLAlchemy URL, Engine, Session or sessionmaker, or a DB-API connection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import ResultRecord, Store
from .connection import is_sql_conn
from .duckdb import DEFAULT_DB, DuckDBStore
from .sql import SqlStore


def open_store(conn: Any = DEFAULT_DB, *, embedder: Any = None) -> Store:
    """The store for ``conn``: DuckDB for a path or DuckDB connection, Memori's SQL tables for
    anything SQL (see :class:`SqlStore`). A store object is passed through."""
    if isinstance(conn, Store) and not isinstance(conn, (str, Path)):
        return conn
    if is_sql_conn(conn):
        return SqlStore(conn, embedder=embedder)
    return DuckDBStore(conn, embedder=embedder)


__all__ = ["DEFAULT_DB", "DuckDBStore", "ResultRecord", "SqlStore", "Store", "open_store"]
