"""Telling a file's format, and reading any supported file through read_source."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from memori_nb import InvalidInputError, SeedData, from_dataframe
from memori_nb.errors import ConfigurationError
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
SHAREGPT = [{"id": "s1", "conversations": [{"from": "human", "value": "Hello from ShareGPT"},
                                           {"from": "gpt", "value": "Hi!"}]}]
LC_MESSAGES = [{"type": "human", "data": {"content": "Hello from LangChain", "type": "human",
                                          "additional_kwargs": {}}},
               {"type": "ai", "data": {"content": "Hi!", "type": "ai", "tool_calls": []}}]
OPENAI_LINE = {"messages": [{"role": "system", "content": "Be kind."},
                            {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello"}]}


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
    assert FORMATS == ("seed", "jsonl", "parquet", "csv", "chatgpt", "claude", "sharegpt",
                       "langchain")


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
    (CHATGPT, "chatgpt"), (CLAUDE, "claude"), (SHAREGPT, "sharegpt"),
    (LC_MESSAGES, "langchain"), ({"session-1": LC_MESSAGES}, "langchain"),
    ([LC_MESSAGES, LC_MESSAGES], "langchain"), ([{"id": "x", "messages": LC_MESSAGES}],
                                                "langchain"),
    (OPENAI_LINE, "jsonl")])
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
    assert detect_format(write_json(tmp_path / "share.json", SHAREGPT * 5)) == "sharegpt"
    assert detect_format(write_json(tmp_path / "lc.json", LC_MESSAGES * 5)) == "langchain"
    assert detect_format(write_json(tmp_path / "lc2.json", {"s": LC_MESSAGES * 5})) \
        == "langchain"


def test_json_lines_in_a_json_file(tmp_path):
    path = tmp_path / "chats.json"
    path.write_text("\n".join(json.dumps(c) for c in SEED["conversations"] * 2) + "\n")
    assert detect_format(path) == "jsonl"


@pytest.mark.parametrize("line", [
    OPENAI_LINE,  # OpenAI fine-tuning: no id
    {**OPENAI_LINE, "source": "ultrachat", "prompt_id": "p1"},  # a Hugging Face row
    {"entity_id": "u", "id": "c1", **OPENAI_LINE},
    SHAREGPT[0],  # ShareGPT as JSON Lines
])
@pytest.mark.parametrize("name", ["train.json", "train.txt", "train.jsonl"])
def test_messages_lines_are_json_lines(tmp_path, line, name):
    path = tmp_path / name
    path.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    assert detect_format(path) == "jsonl"
    path.write_text(json.dumps(line) + "\n")  # a single line
    assert detect_format(path) == "jsonl"


def test_parquet_with_a_messages_column_is_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    duckdb.connect().execute(f"COPY (SELECT [{{'role': 'user', 'content': 'hi'}}] AS messages) "
                             f"TO '{path}' (FORMAT parquet)")
    assert detect_format(path) == "parquet"
    assert detect_format(path.rename(tmp_path / "train-00000-of-00001")) == "parquet"


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


@pytest.mark.parametrize("content, problem", [
    ('{"hello": "world"}', "it is an object with keys hello"), ("[]", "it is an empty list"),
    ("[1, 2]", "it is a list of int"), ("", "it is empty"),
    ("not json", "it is not JSON (Expecting value at line 1, column 1)"),
    ('[1, "a\tb"]', "it is not JSON (Invalid control character at line 1, column 7)"),
    ('[{"title": "x", "messages": [{"role": "user", "content": "hi"}]}]',
     "it is a list of objects with keys title, messages"),
])
@pytest.mark.parametrize("name", ["mystery.txt", "mystery.json"])
def test_a_foreign_file_is_never_taken_for_a_seed_file(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    for attempt in (lambda: detect_format(path), lambda: read_source(path, entity_id="me")):
        with pytest.raises(InvalidInputError) as caught:
            attempt()
        message = str(caught.value)
        assert f"{name}: cannot tell its format ({problem}" in message
        assert "--format" in message and ", ".join(FORMATS) in message
        assert "names its own entities" not in message


@pytest.mark.parametrize("content, problem", [
    ('{"hello": "world"}', "missing 'entity_id'"), ("[]", "the list of entities is empty"),
    ("[1, 2]", "entry 0: expected an object"),
    ("not json", "not valid JSON (Expecting value at line 1, column 1)"),
])
def test_a_file_read_as_a_seed_file_on_request_says_what_is_wrong(tmp_path, content, problem):
    path = tmp_path / "mystery.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=re.escape(problem)):
        read_source(path, format="seed")


def broken(document) -> str:
    """A file cut off in the middle, as an interrupted download leaves it."""
    text = json.dumps(document, indent=2)
    return text[: len(text) * 2 // 3]


@pytest.mark.parametrize("document, fmt, reader_error", [
    (CHATGPT, "chatgpt", "not valid JSON"), (CLAUDE, "claude", "not valid JSON"),
    (SHAREGPT, "sharegpt", "not valid JSON"), (LC_MESSAGES, "langchain", "not valid JSON"),
    (SEED, "seed", "not valid JSON"),
])
@pytest.mark.parametrize("big", [False, True])
def test_a_broken_file_gets_the_error_of_the_format_it_looks_like(
        tmp_path, monkeypatch, document, fmt, reader_error, big):
    if big:
        monkeypatch.setattr(detect, "PEEK_BYTES", 200)
    path = tmp_path / "conversations.json"
    path.write_text(broken(document * 3 if isinstance(document, list) else document))
    assert detect_format(path) == fmt
    with pytest.raises(InvalidInputError) as caught:
        read_source(path, entity_id=None if fmt == "seed" else "me")
    assert reader_error in str(caught.value)
    assert "names its own entities" not in str(caught.value)


@pytest.mark.parametrize("big", [False, True])
def test_a_chatgpt_export_with_bad_records_first_is_still_a_chatgpt_export(
        tmp_path, monkeypatch, big):
    if big:
        monkeypatch.setattr(detect, "PEEK_BYTES", 1024)
    bad = [{"title": f"bad {i}", "id": f"b{i}"} for i in range(25)]
    path = write_json(tmp_path / "conversations.json", bad + CHATGPT)
    assert detect_format(path) == "chatgpt"
    with pytest.raises(InvalidInputError, match="not a ChatGPT export: it is a list of "
                                                "objects with keys title, id"):
        read_source(path, entity_id="me")  # never "a seed file names its own entities"


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
    sharegpt = write_json(tmp_path / "share.json", SHAREGPT)
    langchain = write_json(tmp_path / "session-7.json", LC_MESSAGES)
    assert contents(read_source(sharegpt, entity_id="me")) == [("me", ["s1"])]
    assert contents(read_source(langchain, entity_id="me")) == [("me", ["session-7"])]
    assert contents(read_source(jsonl, entity_id="me")) == [("me", ["j1"])]
    assert contents(read_source(parquet)) == [("u1", ["c1"])]
    assert contents(read_source(csv)) == [("u1", ["c1"])]


@pytest.mark.parametrize("document, name", [(CHATGPT, "ChatGPT export"),
                                            (CLAUDE, "Claude export"),
                                            (SHAREGPT, "ShareGPT file"),
                                            (LC_MESSAGES, "LangChain message file")])
def test_exports_need_an_entity_id(tmp_path, document, name):
    path = write_json(tmp_path / "conversations.json", document)
    with pytest.raises(InvalidInputError, match=f"{name}s carry no user id: pass "
                                                f"--entity-id \\(entity_id=...\\)"):
        read_source(path)


def test_a_seed_file_refuses_an_entity_id(tmp_path):
    with pytest.raises(InvalidInputError, match="a seed file names its own entities"):
        read_source(write_json(tmp_path / "seed.json", SEED), entity_id="me")


@pytest.mark.parametrize("document, fmt, problem", [
    (CHATGPT, "seed", "not a seed file: it looks like a ChatGPT export"),
    (CLAUDE, "chatgpt", "not a ChatGPT export: it looks like a Claude export"),
    (SEED, "claude", "not a Claude export: it looks like a seed file"),
    (CLAUDE, "jsonl", "not JSON Lines"),
    (CLAUDE, "sharegpt", "not a ShareGPT file: it looks like a Claude export"),
    (SHAREGPT, "langchain", "not a LangChain message file: it looks like a ShareGPT file"),
    (LC_MESSAGES, "seed", "not a seed file: it looks like a LangChain message file"),
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



def test_jsonl_with_other_key_names_is_refused_with_ways_that_work(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"user_id": "u1", "chat_id": "007", "role": "user",
                                "content": "I live in Paris."}) + "\n")
    with pytest.raises(InvalidInputError) as caught:
        read_source(path, entity_col="user_id", conversation_col="chat_id")
    message = str(caught.value)
    assert message.startswith("conversation_col, entity_col: options for Parquet and CSV")
    assert f"table = pandas.read_json({str(path)!r}, lines=True, dtype=False)" in message
    assert "from_dataframe(table, conversation_col='chat_id', entity_col='user_id')" in message
    # Each way it names works, and keeps the id as written ("007", not 7).
    table = pd.read_json(path, lines=True, dtype=False)
    seeds = from_dataframe(table, conversation_col="chat_id", entity_col="user_id")
    assert contents(seeds) == [("u1", ["007"])]
    table.to_csv(tmp_path / "chats.csv", index=False)
    assert contents(read_source(tmp_path / "chats.csv", entity_col="user_id",
                                conversation_col="chat_id")) == [("u1", ["007"])]

# --- read_source passes the reading options on ---------------------------------------------

READING = {"dayfirst": True, "timestamp_format": None, "role_map": {"agent": "assistant"}}


@pytest.mark.parametrize("fmt, target", [
    ("jsonl", "read_jsonl"), ("parquet", "read_table"), ("csv", "read_table"),
    ("seed", "load_seed_file")])
def test_read_source_passes_reading_options_to_every_reader(tmp_path, monkeypatch, fmt,
                                                             target):
    calls = []
    monkeypatch.setattr(detect, target, lambda path, **kwargs: calls.append(kwargs) or [])
    read_source(write_json(tmp_path / "data.json", SEED), format=fmt, **READING)
    assert calls and all(calls[0][key] == value for key, value in READING.items())


@pytest.mark.parametrize("fmt, document", [
    ("chatgpt", CHATGPT), ("claude", CLAUDE), ("sharegpt", SHAREGPT), ("langchain",
                                                                       LC_MESSAGES)])
def test_read_source_passes_reading_options_to_the_json_readers(tmp_path, fmt, document):
    [seed] = read_source(write_json(tmp_path / "data.json", document), entity_id="me",
                         **READING)
    assert seed.options.timestamps.dayfirst is True
    assert seed.options.roles["agent"] == "assistant"


def test_a_bad_role_map_is_refused_up_front(tmp_path):
    with pytest.raises(ConfigurationError, match="role_map maps 'x' to 'robot'"):
        read_source(write_json(tmp_path / "c.json", CLAUDE), entity_id="me",
                    role_map={"x": "robot"})
