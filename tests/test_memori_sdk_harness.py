"""Sanity checks of the Memori SDK harness (tests/memori_sdk.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

# The fixtures (postgres_server, postgres_url, pg_url, memori_sdk_offline) come from
# memori_sdk, registered in conftest.py through ``pytest_plugins``.
from memori_sdk import (
    MEMORI_TABLES,
    psycopg_conninfo,
    schema_snapshot,
    sdk_add_facts,
    sdk_build,
    sdk_recall,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database: a SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'memori.sqlite'}"
    return request.getfixturevalue("pg_url")


def test_postgres_server_is_real_and_databases_are_fresh(postgres_server, postgres_url, pg_url):
    assert postgres_server.startup_seconds is not None
    with psycopg.connect(psycopg_conninfo(pg_url)) as conn:
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("18")
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]
        assert tables == 0
    with psycopg.connect(postgres_server.conninfo()) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
    assert pg_url != postgres_url and pg_url.startswith("postgresql+psycopg://")


def test_sdk_build_twice_changes_nothing(db_url):
    assert sdk_build(db_url) == 2
    first = schema_snapshot(db_url)
    assert set(first["tables"]) == MEMORI_TABLES
    assert first["schema_version"] == [2]
    data_tables = set(first["tables"]) - {"memori_schema_version"}
    assert all(first["tables"][name]["rows"] == 0 for name in data_tables)
    assert sdk_build(db_url) == 2
    assert schema_snapshot(db_url) == first


def test_sdk_build_through_dbapi_gives_the_same_schema(db_url, tmp_path, request):
    sdk_build(db_url)
    if db_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'dbapi.sqlite'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = server.create_database()
        request.addfinalizer(lambda: server.drop_database(name))
        other = server.url(name)
    assert sdk_build(other, via="dbapi") == 2
    assert schema_snapshot(other) == schema_snapshot(db_url)


def test_sdk_recall_runs_offline_and_finds_an_sdk_written_fact(db_url, memori_sdk_offline):
    sdk_build(db_url)
    facts = ["User lives in Lisbon", "User likes hiking", "User has a cat named Miso"]
    ids = sdk_add_facts(db_url, "user-1", facts, summary="The user talked about moving.")
    assert ids["entity_id"] == 1 and ids["conversation_id"] == 1

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        sizes = conn.execute(
            sa.text("SELECT length(content_embedding) FROM memori_entity_fact")
        ).scalars()
        assert set(sizes) == {384 * 4}
        mentions = sa.text("SELECT count(*) FROM memori_entity_fact_mention")
        assert conn.execute(mentions).scalar() == 3
    engine.dispose()

    found = sdk_recall(db_url, "user-1", "where does the user live?", limit=2)
    assert [f["content"] for f in found][0] == "User lives in Lisbon"
    assert len(found) == 2
    keys = {"id", "content", "similarity", "rank_score", "date_created", "summaries"}
    assert set(found[0]) == keys
    assert 0.5 < found[0]["similarity"] < 0.7
    assert [s["content"] for s in found[0]["summaries"]] == ["The user talked about moving."]

    query = "where does the user live?"
    python_path = sdk_recall(db_url, "user-1", query, limit=2, rust_core=False)
    assert [f["id"] for f in python_path] == [f["id"] for f in found]
    assert python_path[0]["rank_score"] == pytest.approx(found[0]["rank_score"], abs=1e-5)
