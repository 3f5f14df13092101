"""Telling a file's format, and reading any supported file through read_source."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import duckdb
import pytest

from memori_nb import InvalidInputError, SeedData
from memori_nb.sources import FORMATS, detect, detect_format, read_source

SEED = {"entity_id": "u1", "conversations": [
    {"id": "c1", "messages": [{"role": "user", "content": "I have a cat."}]}]}
CHATGPT = [{"title": "t", "id": "g1", "current_node": "b", "mapping": {
    "a": {"id": "a", "message": None, "parent": None, "children": ["b"]},
    "b": {"id": "b", "parent": "a", "children": [], "message": {
        "author": {"role": "user"}, "create_time": 1.7e9, "recipient": "all",
        "content": {"content_type": "text", "parts": ["Hello from ChatGPT"]}}}}}]
CLAUDE = [{"uuid": "k1", "name": "n", "created_at": "2024-01-01T00:00:00Z", "chat_messages": [
    {"sender": "human", "text": "Hello from Claude", "created_at": "2024-01-01T00:00:00Z",
     "content": [{"type": "text", "text": "Hello from Claude"}]}]}]


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document))
    return path


def write_table(path: Path, fmt: str) -> Path:
    option = "(FORMAT parquet)" if fmt == "parquet" else "(HEADER)"
    duckdb.connect().execute(f"COPY (SELECT 'u1' AS entity_id, 'c1' AS conversation_id, "
                             f"'user' AS role, 'hi' AS content) TO '{path}' {option}")
    return path


def contents(seeds) -> list[tuple[str, list[str]]]:
    out = []
    for seed in seeds:
        assert isinstance(seed, SeedData)
        out.append((seed.entity_id, [getattr(c, "id", None) or c["id"]
                                     for c in seed.conversations]))
    return out


# --- detect_format --------------------------------------------------------------------------

def test_formats_are_listed():
    assert FORMATS == ("seed", "jsonl", "parquet", "csv", "chatgpt", "claude")


@pytest.mark.parametrize("name", ["a.jsonl", "a.ndjson", "A.JSONL"])
def test_jsonl_by_extension(tmp_path, name):
    (tmp_path / name).write_text("")
    assert detect_format(tmp_path / name) == "jsonl"


@pytest.mark.parametrize("name, fmt", [("m.parquet", "parquet"), ("m.pq", "parquet"),
                                       ("m.csv", "csv"), ("m.csv.gz", "csv")])
def test_tables_by_extension(tmp_path, name, fmt):
    (tmp_path / name).write_bytes(b"")
    assert detect_format(tmp_path / name) == fmt


def test_parquet_without_its_extension_by_its_magic_bytes(tmp_path):
    path = write_table(tmp_path / "m.parquet", "parquet").rename(tmp_path / "messages.bin")
    assert detect_format(path) == "parquet"


@pytest.mark.parametrize("document, fmt", [
    (SEED, "seed"), ([SEED, SEED], "seed"), ({"conversations": [], "entity_id": "u"}, "seed"),
    (CHATGPT, "chatgpt"), (CLAUDE, "claude")])
def test_json_by_structure(tmp_path, document, fmt):
    assert detect_format(write_json(tmp_path / "data.json", document)) == fmt


def test_a_big_json_file_is_told_from_its_start(tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "PEEK_BYTES", 128)
    big = {"entity_id": "u1", "conversations": [
        {"id": f"c{i}", "messages": [{"role": "user", "content": "x" * 50}]}
        for i in range(20)]}
    assert detect_format(write_json(tmp_path / "seed.json", big)) == "seed"
    assert detect_format(write_json(tmp_path / "gpt.json", CHATGPT * 5)) == "chatgpt"
    assert detect_format(write_json(tmp_path / "claude.json", CLAUDE * 5)) == "claude"


def test_json_lines_in_a_json_file(tmp_path):
    path = tmp_path / "chats.json"
    path.write_text("\n".join(json.dumps(c) for c in SEED["conversations"] * 2) + "\n")
    assert detect_format(path) == "jsonl"


@pytest.mark.parametrize("kind, document", [("chatgpt", CHATGPT), ("claude", CLAUDE)])
def test_export_zips_by_their_conversations_member(tmp_path, kind, document):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("user.json", "{}")
        zf.writestr("conversations.json", json.dumps(document))
    assert detect_format(archive) == kind


def test_a_folder_of_split_chatgpt_files(tmp_path):
    write_json(tmp_path / "conversations-000.json", CHATGPT)
    write_json(tmp_path / "conversations-001.json", CHATGPT)
    assert detect_format(tmp_path) == "chatgpt"


@pytest.mark.parametrize("content", ['{"hello": "world"}', "[]", "[1, 2]", "not json", ""])
def test_unknown_content_lists_the_formats_and_suggests_format(tmp_path, content):
    path = tmp_path / "mystery.txt"
    path.write_text(content)
    with pytest.raises(InvalidInputError) as caught:
        detect_format(path)
    message = str(caught.value)
    assert "mystery.txt: cannot tell its format" in message
    assert "--format" in message and ", ".join(FORMATS) in message


@pytest.mark.parametrize("content, problem", [
    ('{"hello": "world"}', "missing 'entity_id'"), ("[]", "the list of entities is empty"),
    ("[1, 2]", "entry 0: expected an object"), ("not json", "not valid JSON (line 1"),
])
def test_an_unknown_json_file_is_read_as_a_seed_file_that_says_what_is_wrong(
        tmp_path, content, problem):
    path = tmp_path / "mystery.json"
    path.write_text(content)
    assert detect_format(path) == "seed"
    with pytest.raises(InvalidInputError, match=re.escape(problem)):
        read_source(path)


def test_a_zip_without_conversations_and_a_missing_file(tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cat.jpg", b"\xff\xd8")
    with pytest.raises(InvalidInputError, match="no conversations.*--format"):
        detect_format(archive)
    with pytest.raises(InvalidInputError, match="no such file"):
        detect_format(tmp_path / "nope.json")


# --- read_source ----------------------------------------------------------------------------

def test_read_source_reads_every_format(tmp_path):
    seed = write_json(tmp_path / "seed.json", SEED)
    gpt = write_json(tmp_path / "gpt.json", CHATGPT)
    claude = write_json(tmp_path / "claude.json", CLAUDE)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"conversation_id": "j1", "role": "user", "content": "hi"}))
    parquet = write_table(tmp_path / "m.parquet", "parquet")
    csv = write_table(tmp_path / "m.csv", "csv")
    assert contents(read_source(seed)) == [("u1", ["c1"])]
    assert contents(read_source(gpt, entity_id="me")) == [("me", ["g1"])]
    assert contents(read_source(claude, entity_id="me")) == [("me", ["k1"])]
    assert contents(read_source(jsonl, entity_id="me")) == [("me", ["j1"])]
    assert contents(read_source(parquet)) == [("u1", ["c1"])]
    assert contents(read_source(csv)) == [("u1", ["c1"])]


@pytest.mark.parametrize("document, name", [(CHATGPT, "ChatGPT"), (CLAUDE, "Claude")])
def test_exports_need_an_entity_id(tmp_path, document, name):
    path = write_json(tmp_path / "conversations.json", document)
    with pytest.raises(InvalidInputError, match=f"{name} exports carry no user id: pass "
                                                f"--entity-id \\(entity_id=...\\)"):
        read_source(path)


def test_a_seed_file_refuses_an_entity_id(tmp_path):
    with pytest.raises(InvalidInputError, match="a seed file names its own entities"):
        read_source(write_json(tmp_path / "seed.json", SEED), entity_id="me")


@pytest.mark.parametrize("document, fmt, problem", [
    (CHATGPT, "seed", "not a seed file: it looks like a ChatGPT export"),
    (CLAUDE, "chatgpt", "not a ChatGPT export: it looks like a Claude export"),
    (SEED, "claude", "not a Claude export: it looks like a seed file"),
    (SEED, "jsonl", "not JSON Lines"),
])
def test_a_file_that_does_not_match_the_format_asked_for(tmp_path, document, fmt, problem):
    path = write_json(tmp_path / "data.json", document)
    with pytest.raises(InvalidInputError, match=problem):
        read_source(path, format=fmt, entity_id=None if fmt == "seed" else "me")


def test_a_csv_read_as_parquet(tmp_path):
    path = write_table(tmp_path / "m.csv", "csv")
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        read_source(path, format="parquet")


def test_an_unknown_format_name(tmp_path):
    with pytest.raises(InvalidInputError, match="format must be one of seed, jsonl"):
        read_source(tmp_path / "x", format="xml")


def test_column_names_go_to_tables_only(tmp_path):
    path = tmp_path / "m.csv"
    duckdb.connect().execute(f"COPY (SELECT 'c1' AS chat, 'user' AS role, 'hi' AS text) "
                             f"TO '{path}' (HEADER)")
    assert contents(read_source(path, entity_id="u", conversation_col="chat",
                                content_col="text")) == [("u", ["c1"])]
    with pytest.raises(InvalidInputError, match="content_col: options for Parquet and CSV"):
        read_source(write_json(tmp_path / "seed.json", SEED), content_col="text")
