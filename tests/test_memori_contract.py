"""Contract tests against the real Memori SDK (memori 3.3.6): what memori_nb writes is what
the SDK builds and recalls from, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("memori")
pytest.importorskip("onnxruntime")

from helpers import API_KEY, conversation  # noqa: E402
from memori_nb import Memori, SeedData  # noqa: E402
from memori_sdk import schema_snapshot, sdk_add_facts, sdk_build, sdk_recall  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_code() -> str:
    """The Quick Start exactly as the README shows it."""
    text = README.read_text()
    match = re.search(r"<!-- quick-start -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README's Quick Start block is missing"
    return match.group(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A SQLAlchemy URL of an empty database, SQLite file or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'memori.db'}"
    return request.getfixturevalue("pg_url")


def test_the_quick_start_as_written_then_the_sdk_recalls_it(database, server, tmp_path,
                                                           memori_sdk_offline):
    code = quick_start_code().replace('"sqlite:///memori.db"', repr(database))
    env = {**os.environ, "MEMORI_API_KEY": API_KEY, "MEMORI_API_URL_BASE": server.url}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Processed: 1/1" in done.stdout
    assert len(server.requests) == 1  # sent once, to the (loopback) augmentation service

    recalled = sdk_recall(database, "user-123", "what car does the user drive?")
    assert recalled and recalled[0]["content"] == "user owns Tesla Model 3"
    assert recalled[0]["similarity"] > 0.3


def test_the_sdk_build_finds_nothing_to_change_in_what_memori_nb_built(database):
    m = Memori(conn=database, backend="local")
    m.config.storage.build()
    asyncio.run(m.seed(SeedData.for_conversations(entity_id="u", conversations=[
        conversation("c1", "I live in Lisbon.")])))
    m.close()
    before = schema_snapshot(database)
    assert sdk_build(database) == 2
    assert schema_snapshot(database) == before


def memori_schema(url: str) -> dict:
    """Memori's tables as a snapshot describes them, without row counts or our own tables."""
    tables = schema_snapshot(url)["tables"]
    return {name: {k: v for k, v in table.items() if k != "rows"}
            for name, table in tables.items() if not name.startswith("memori_nb_")}


def test_memori_nb_builds_exactly_the_sdks_schema(database, tmp_path):
    if database.startswith("sqlite"):
        by_sdk = f"sqlite:///{tmp_path / 'sdk.db'}"
    else:
        by_sdk = database.rsplit("/", 1)[0] + "/" + database.rsplit("/", 1)[1] + "_sdk"
        import sqlalchemy as sa
        admin = sa.create_engine(database, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{by_sdk.rsplit("/", 1)[1]}"'))
        admin.dispose()
    sdk_build(by_sdk)
    Memori(conn=database, backend="local").config.storage.build()
    assert memori_schema(database) == memori_schema(by_sdk)


def test_memori_nb_seeds_a_database_the_sdk_built_and_the_sdk_recalls_both(
        database, memori_sdk_offline):
    assert sdk_build(database) == 2
    sdk_add_facts(database, "ann", ["Ann's favourite colour is green"], summary="colours")
    m = Memori(conn=database, backend="local")
    m.config.storage.build()
    asyncio.run(m.seed(SeedData.for_conversations(entity_id="ann", conversations=[
        conversation("c1", "I live in Lisbon. I have a dog named Rex."),
        conversation("c2", "I moved to Porto last year.")])))
    m.close()

    where = sdk_recall(database, "ann", "where does ann live?", limit=3)
    assert {"user lives_in Lisbon", "user moved_to Porto"} <= {f["content"] for f in where}
    pets = sdk_recall(database, "ann", "what is the name of the dog?", limit=1)
    assert pets[0]["content"] == "user has_dog Rex"
    # The summaries reach recall through the mention table, as the SDK's own do.
    assert "Rex" in pets[0]["summaries"][0]["content"]
    colours = sdk_recall(database, "ann", "favourite colour", limit=1)
    assert colours[0]["content"] == "Ann's favourite colour is green"


def test_our_recall_ranks_like_the_sdks(database, memori_sdk_offline):
    m = Memori(conn=database, backend="local")
    m.attribution(entity_id="bo")
    asyncio.run(m.seed(SeedData.for_conversations(entity_id="bo", conversations=[
        conversation("c1", "I live in Lisbon. I have a dog named Rex. I work at Acme. "
                           "I love jazz. I'm allergic to peanuts.")])))
    for query in ("where do I live?", "pets", "what music do I like?"):
        ours = [f["content"] for f in m.recall(query, limit=3)]
        theirs = [f["content"] for f in sdk_recall(database, "bo", query, limit=3)]
        assert ours[0] == theirs[0], query
    m.close()
