"""Parquet and CSV through DuckDB: long format (order, renames, problems, timestamps decided
once per column) and one conversation per row (a messages list column)."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from memori_nb import Conversation, InvalidInputError, Memori
from memori_nb.models import SeedData
from memori_nb.sources import read_jsonl, read_table
from memori_nb.timestamps import AmbiguousTimestampsError
from memori_nb.validation import Invalid, check_conversations

UTC = timezone.utc

# Interleaved on purpose: c2's rows sit between c1's, bob's between alice's, and c1's turns
# are not in time order in the file.
ROWS = """
    ('alice', 'c1', 'assistant', 'Congratulations! 🎉', TIMESTAMP '2024-03-01 10:00:05', 1),
    ('alice', 'c1', 'user', 'I just bought a Tesla Model 3!', TIMESTAMP '2024-03-01 10:00:00', 2),
    ('bob',   'b1', 'user', 'I live in Lisbon.', TIMESTAMP '2024-03-02 08:00:00', 3),
    ('alice', 'c2', 'user', 'My dog is called Rex.', TIMESTAMP '2024-03-03 09:00:00', 4),
    ('alice', 'c1', 'user', 'It is red.', TIMESTAMP '2024-03-01 10:01:00', 5),
    ('bob',   'b1', 'assistant', 'Lovely city.', TIMESTAMP '2024-03-02 08:00:01', 6)
"""
COLUMNS = "entity_id, conversation_id, role, content, timestamp, n"


def copy_to(path: Path, select: str, fmt: str) -> Path:
    option = "(FORMAT parquet)" if fmt == "parquet" else "(HEADER, DELIMITER ',')"
    con = duckdb.connect()
    con.execute(f"COPY ({select}) TO '{path}' {option}")
    con.close()
    return path


def messages_file(tmp_path: Path, fmt: str, rows: str = ROWS, columns: str = COLUMNS,
                  select: str = "*") -> Path:
    return copy_to(tmp_path / f"messages.{fmt}",
                   f"SELECT {select} FROM (VALUES {rows}) t({columns}) ORDER BY n", fmt)


def read(path, **kwargs):
    """[(entity, [Conversation | Invalid])] as validation judges them, reading each SeedData
    before the next."""
    return [(seed.entity_id, [parsed for _, parsed in check_conversations(seed)])
            for seed in read_table(path, **kwargs)]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_rows_are_grouped_by_entity_and_conversation_in_first_seen_order(tmp_path, fmt):
    seeds = read(messages_file(tmp_path, fmt, select="* EXCLUDE (n)"))
    assert [(entity, [c.id for c in convs]) for entity, convs in seeds] == [
        ("alice", ["c1", "c2"]), ("bob", ["b1"])]
    c1 = seeds[0][1][0]
    assert [(m.role, m.content) for m in c1.messages] == [
        ("user", "I just bought a Tesla Model 3!"), ("assistant", "Congratulations! 🎉"),
        ("user", "It is red.")]
    assert c1.messages[0].timestamp == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_grouped_file_streams_in_file_order_with_each_conversation_in_time_order(tmp_path,
                                                                                     fmt):
    rows = """('u', 'c1', 'assistant', 'second', TIMESTAMP '2024-01-01 10:00:02', 1),
              ('u', 'c1', 'user', 'first', TIMESTAMP '2024-01-01 10:00:01', 2),
              ('u', 'c1', 'assistant', 'third', TIMESTAMP '2024-01-01 10:00:03', 4),
              ('u', 'c1', 'user', 'same time as third', TIMESTAMP '2024-01-01 10:00:03', 5),
              ('u', 'b2', 'user', 'b2 later', TIMESTAMP '2024-01-01 10:00:09', 6),
              ('u', 'b2', 'user', 'undated', NULL, 6),
              ('u', 'b2', 'user', 'b2 earlier', TIMESTAMP '2024-01-01 10:00:01', 6),
              ('v', 'a3', 'user', 'last entity', NULL, 7)"""
    path = messages_file(tmp_path, fmt, rows=rows, select="* EXCLUDE (n)")
    [(_, [c1, b2]), (v, [a3])] = read(path)
    assert [m.content for m in c1.messages] == ["first", "second", "third",
                                                "same time as third"]
    # A message of unknown time: the conversation keeps file order (no guess).
    assert [m.content for m in b2.messages] == ["b2 later", "undated", "b2 earlier"]
    assert (b2.id, v, a3.id) == ("b2", "v", "a3")


def test_without_timestamps_file_order_is_kept(tmp_path):
    path = messages_file(tmp_path, "parquet", select="* EXCLUDE (timestamp, n)")
    [(_, [c1, _c2]), _bob] = read(path)
    assert [m.content for m in c1.messages] == ["Congratulations! 🎉",
                                                "I just bought a Tesla Model 3!", "It is red."]
    assert all(m.timestamp is None for m in c1.messages)


def test_renamed_columns(tmp_path):
    path = messages_file(tmp_path, "csv", columns="user_id, chat, speaker, text, sent_at, n")
    seeds = read(path, entity_col="user_id", conversation_col="chat", role_col="speaker",
                 content_col="text", timestamp_col="sent_at")
    assert [e for e, _ in seeds] == ["alice", "bob"]
    assert seeds[1][1][0].messages[1].timestamp == datetime(2024, 3, 2, 8, 0, 1, tzinfo=UTC)


def test_missing_columns_are_named_with_the_columns_present_and_how_to_rename(tmp_path):
    path = messages_file(tmp_path, "parquet", columns="user_id, chat, role, text, ts, n")
    with pytest.raises(InvalidInputError) as caught:
        read_table(path)
    message = str(caught.value)
    assert "missing columns 'entity_id', 'conversation_id', 'content'" in message
    assert "the file has user_id, chat, role, text, ts, n" in message
    assert "conversation_col=... (--conversation-col)" in message
    assert "content_col=... (--content-col)" in message
    assert "entity_id=... (--entity-id)" in message


def test_a_named_timestamp_column_must_exist(tmp_path):
    path = messages_file(tmp_path, "parquet")
    with pytest.raises(InvalidInputError, match=r"missing column 'sent_at'.*timestamp_col"):
        read_table(path, timestamp_col="sent_at")


def test_entity_id_stands_in_for_a_missing_entity_column(tmp_path):
    path = messages_file(tmp_path, "csv", select="* EXCLUDE (entity_id)")
    seeds = read(path, entity_id="everyone")
    assert [(e, [c.id for c in convs]) for e, convs in seeds] == [
        ("everyone", ["c1", "b1", "c2"])]


def test_rows_with_no_entity_need_entity_id(tmp_path):
    rows = "(NULL, 'c1', 'user', 'hi', 1), ('bob', 'c2', 'user', 'yo', 2)"
    path = messages_file(tmp_path, "parquet", rows=rows,
                         columns="entity_id, conversation_id, role, content, n")
    seeds = read_table(path)
    with pytest.raises(InvalidInputError, match="row 1 has no entity: pass entity_id"):
        next(seeds)
    assert [e for e, _ in read(path, entity_id="dflt")] == ["dflt", "bob"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_unknown_and_missing_roles_fail_the_conversation_naming_rows(tmp_path, fmt):
    rows = """('u', 'good', 'user', 'fine', 1), ('u', 'bad', 'user', NULL, 2),
              ('u', 'bad', 'robot', 'beep', 3), ('u', 'bad', 'assistant', '  ', 4),
              ('u', 'bad', 'user', 'ok', 5), ('u', 'bad', NULL, 'x', 6),
              ('u', NULL, 'user', 'orphan', 7), ('u', 'last', 'user', 'fine too', 8)"""
    path = messages_file(tmp_path, fmt, rows=rows, select="* EXCLUDE (n)",
                         columns="entity_id, conversation_id, role, content, n")
    [(_, items)] = read(path)
    good, bad, orphan, last = items
    assert isinstance(good, Conversation) and isinstance(last, Conversation)
    assert isinstance(bad, Invalid) and bad.conversation_id == "bad"
    assert bad.reason.startswith("conversation 'bad': row 3: role 'robot' is not one of "
                                 "user, assistant, system")
    assert bad.reason.endswith("; row 6: role is missing")
    assert orphan.conversation_id == "row 7"
    assert orphan.reason == "1 row with no conversation id (row 7)"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_empty_messages_and_role_aliases_are_lenient(tmp_path, fmt):
    rows = """('u', 'c1', 'User', 'hi', 1), ('u', 'c1', 'ai', 'hello', 2),
              ('u', 'c1', 'human', NULL, 3), ('u', 'c1', 'tool', '{}', 4),
              ('u', 'c1', 'assistant', '  ', 5), ('u', 'c2', 'user', '', 6)"""
    path = messages_file(tmp_path, fmt, rows=rows, select="* EXCLUDE (n)",
                         columns="entity_id, conversation_id, role, content, n")
    [(_, [c1, c2])] = read(path)
    assert [(m.role, m.content) for m in c1.messages] == [("user", "hi"),
                                                          ("assistant", "hello")]
    assert c1.warnings == ("empty message left out (2: row 3, row 5)",
                           "tool message left out (row 4)")
    assert isinstance(c2, Invalid)
    assert c2.reason.startswith("conversation 'c2': nothing left to send")


def test_ids_lose_surrounding_whitespace(tmp_path):
    rows = """(' Jason ', ' c1 ', 'user', 'hi', 1), ('Jason', 'c2', 'user', 'ho', 2),
              ('   ', 'c3', 'user', 'blank entity', 3)"""
    path = messages_file(tmp_path, "csv", rows=rows, select="* EXCLUDE (n)",
                         columns="entity_id, conversation_id, role, content, n")
    seeds = read_table(path, entity_id="dflt")
    jason = next(seeds)
    assert (jason.entity_id, jason.warnings) == ("Jason", (
        "entity id whitespace trimmed (' Jason ')",))
    c1, c2 = [c for _, c in check_conversations(jason)]  # one run once trimmed
    assert (c1.id, c1.warnings, c2.id) == ("c1", ("id whitespace trimmed (' c1 ')",), "c2")
    assert next(seeds).entity_id == "dflt"  # an entity of only spaces is no entity


@pytest.mark.parametrize("value, expected", [
    ("'2024-03-01T10:00:00Z'", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("'2024-03-01T12:00:00+02:00'", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("'2024-03-01 10:00:00'", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("'1709287200'", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("1709287200", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("1709287200.5", datetime(2024, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ("'1709287200000'", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("1709287200000", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("'Fri, 01 Mar 2024 11:00:00 +0100'", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("'01.03.2024, 10:00:00'", None),
    ("'13.03.2024, 10:00:00'", datetime(2024, 3, 13, 10, tzinfo=UTC)),
    ("TIMESTAMPTZ '2024-03-01 11:00:00+01'", datetime(2024, 3, 1, 10, tzinfo=UTC)),
    ("TIMESTAMP '2024-03-01 10:00:00.123456'", datetime(2024, 3, 1, 10, 0, 0, 123456,
                                                         tzinfo=UTC)),
    ("DATE '2024-03-01'", datetime(2024, 3, 1, tzinfo=UTC)),
])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_timestamps_become_utc_datetimes(tmp_path, fmt, value, expected):
    path = copy_to(tmp_path / f"t.{fmt}", f"SELECT 'c1' AS conversation_id, 'user' AS role, "
                                          f"'hi' AS content, {value} AS timestamp", fmt)
    if expected is None:  # a lone date that could be either way: asked for
        with pytest.raises(AmbiguousTimestampsError):
            read_table(path, entity_id="u")
        return
    [(_, [conv])] = read(path, entity_id="u")
    assert conv.messages[0].timestamp == expected


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_an_unreadable_timestamp_is_a_warning(tmp_path, fmt):
    path = copy_to(tmp_path / f"t.{fmt}", "SELECT 'c1' AS conversation_id, 'user' AS role, "
                                          "'hi' AS content, 'last tuesday' AS timestamp", fmt)
    [(_, [conv])] = read(path, entity_id="u")
    assert conv.messages[0].timestamp is None
    assert conv.warnings == ("unreadable timestamp left empty (row 1: 'last tuesday')",)


def test_a_date_python_cannot_hold_is_a_warning(tmp_path):
    path = copy_to(tmp_path / "t.parquet", "SELECT 'c1' AS conversation_id, 'user' AS role, "
                   "'hi' AS content, TIMESTAMP 'infinity' AS timestamp", "parquet")
    [(_, [conv])] = read(path, entity_id="u")
    assert conv.messages[0].timestamp is None
    assert conv.warnings == ("unreadable timestamp left empty (row 1: 'infinity')",)


# The issue's case: day-first chat times. Read month first, c1's first message (12 January)
# would move to 1 December, after the second.
DAY_FIRST = """('c1', 'user', 'first', '12.01.2024, 13:42:02', 1),
               ('c1', 'assistant', 'second', '02.02.2024, 09:00:00', 2),
               ('c2', 'user', 'other', '13.01.2024, 08:00:00', 3)"""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_column_that_proves_day_first_is_read_day_first_in_order(tmp_path, fmt):
    path = messages_file(tmp_path, fmt, rows=DAY_FIRST, select="* EXCLUDE (n)",
                         columns="conversation_id, role, content, timestamp, n")
    [(_, [c1, c2])] = read(path, entity_id="u")
    assert [(m.content, m.timestamp) for m in c1.messages] == [
        ("first", datetime(2024, 1, 12, 13, 42, 2, tzinfo=UTC)),
        ("second", datetime(2024, 2, 2, 9, tzinfo=UTC))]
    assert c2.messages[0].timestamp == datetime(2024, 1, 13, 8, tzinfo=UTC)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_column_whose_dates_could_be_either_asks(tmp_path, fmt):
    rows = DAY_FIRST.replace("13.01.2024", "11.01.2024")
    path = messages_file(tmp_path, fmt, rows=rows, select="* EXCLUDE (n)",
                         columns="conversation_id, role, content, timestamp, n")
    with pytest.raises(AmbiguousTimestampsError, match="2 dates could be day/month") as e:
        read_table(path, entity_id="u")
    assert "dayfirst=True" in str(e.value) and str(path) in str(e.value)
    [(_, [c1, _c2])] = read(path, entity_id="u", dayfirst=False)  # as the user says
    assert [m.content for m in c1.messages] == ["second", "first"]  # 1 Feb, then 1 Dec
    [(_, [c1, _c2])] = read(path, entity_id="u", timestamp_format="%d.%m.%Y, %H:%M:%S")
    assert c1.messages[0].timestamp == datetime(2024, 1, 12, 13, 42, 2, tzinfo=UTC)


def test_a_column_with_dates_written_both_ways_asks(tmp_path):
    rows = DAY_FIRST.replace("02.02.2024", "02.13.2024")
    path = messages_file(tmp_path, "csv", rows=rows, select="* EXCLUDE (n)",
                         columns="conversation_id, role, content, timestamp, n")
    with pytest.raises(AmbiguousTimestampsError, match="both day first"):
        read_table(path, entity_id="u")


def test_ids_in_csv_stay_text(tmp_path):
    path = copy_to(tmp_path / "ids.csv", "SELECT '007' AS entity_id, '0042' AS conversation_id, "
                                         "'user' AS role, '123' AS content", "csv")
    [(entity, [conv])] = read(path)
    assert (entity, conv.id, conv.messages[0].content) == ("007", "0042", "123")


def test_numeric_ids_in_parquet_become_strings(tmp_path):
    path = copy_to(tmp_path / "ids.parquet", "SELECT 7 AS entity_id, 42 AS conversation_id, "
                                             "'user' AS role, 'hi' AS content", "parquet")
    [(entity, [conv])] = read(path)
    assert (entity, conv.id) == ("7", "42")


def test_small_batches_stream_the_same_result(tmp_path):
    path = copy_to(tmp_path / "many.parquet", """
        SELECT 'e' || (c % 3) AS entity_id, 'c' || c AS conversation_id,
               CASE WHEN t = 0 THEN 'user' ELSE 'assistant' END AS role,
               'message ' || t || ' of ' || c AS content
        FROM range(50) r(c), range(2) s(t)""", "parquet")
    whole = read(path)
    assert read(path, batch_rows=3) == whole
    assert sum(len(convs) for _, convs in whole) == 50
    assert [e for e, _ in whole] == ["e0", "e1", "e2"]


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        read_table(tmp_path / "nope.parquet")
    fake = tmp_path / "fake.parquet"
    fake.write_text("conversation_id,role,content\nc1,user,hi\n")
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        read_table(fake)
    unknown = tmp_path / "data.txt"
    unknown.write_text("x")
    with pytest.raises(InvalidInputError, match="format='parquet' or format='csv'"):
        read_table(unknown)
    with pytest.raises(InvalidInputError, match="format must be one of parquet, csv"):
        read_table(fake, format="xlsx")


def test_an_empty_table_has_no_seed_data(tmp_path):
    path = copy_to(tmp_path / "empty.parquet", "SELECT 'u' AS entity_id, 'c' AS "
                   "conversation_id, 'user' AS role, 'x' AS content WHERE false", "parquet")
    assert read(path) == []


def test_no_temporary_files_are_left_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = messages_file(tmp_path, "parquet")
    read(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messages.parquet"]


def test_seeding_a_parquet_stream(tmp_path):
    m = Memori(conn=":memory:", backend="local")
    result = asyncio.run(m.seed(read_table(messages_file(tmp_path, "parquet")),
                                keep_results=False))
    assert (result.total, result.successful) == (3, 3)
    assert sorted(m.results()["conversation_id"]) == ["b1", "c1", "c2"]


def test_a_stream_dropped_unread_removes_its_spill_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    seeds = read_table(messages_file(tmp_path, "parquet"))
    assert len(list((tmp_path / "tmp").iterdir())) == 1
    del seeds
    gc.collect()
    assert list((tmp_path / "tmp").iterdir()) == []


# --- one conversation per row: a messages list column (Hugging Face chat datasets) ----------

def test_a_messages_column_is_one_conversation_per_row(tmp_path):
    path = copy_to(tmp_path / "chat.parquet", """
        SELECT * FROM (VALUES
            ('alice', 'c1', 'Tea', [{'role': 'system', 'content': 'Be brief.'},
                                    {'role': 'user', 'content': 'I like green tea.'},
                                    {'role': 'assistant', 'content': 'Noted.'}]),
            ('alice', NULL, NULL, [{'role': 'user', 'content': 'Hi'},
                                   {'role': 'tool', 'content': '{}'}]),
            ('bob', 'b1', NULL, [{'role': 'robot', 'content': 'beep'}])
        ) t(entity_id, conversation_id, title, messages)""", "parquet")
    [(alice, [c1, anonymous]), (bob, [b1])] = read(path)
    assert (alice, c1.id, c1.title) == ("alice", "c1", "Tea")
    assert [m.role for m in c1.messages] == ["system", "user", "assistant"]
    assert anonymous.id.startswith("sha256:")
    assert anonymous.warnings == ("tool message left out (row 2 messages[1])",)
    assert bob == "bob" and b1.reason.startswith("conversation 'b1': row 3 messages[0]: "
                                                 "role 'robot'")
    assert read(path)[0][1][1].id == anonymous.id  # the same id on every read


def test_a_dataset_row_without_id_gets_the_id_a_fine_tuning_line_gets(tmp_path):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(json.dumps({"messages": messages}) + "\n")
    [from_jsonl] = [c for _, c in check_conversations(next(read_jsonl(jsonl, entity_id="u")))]
    parquet = copy_to(tmp_path / "train.parquet", "SELECT [{'role': 'user', 'content': 'Hi'}, "
                      "{'role': 'assistant', 'content': 'Hello'}] AS messages", "parquet")
    [(_, [from_parquet])] = read(parquet, entity_id="u")
    assert from_parquet.id == from_jsonl.id


def test_sharegpt_conversations_column_and_day_first_message_times(tmp_path):
    path = copy_to(tmp_path / "share.parquet", """
        SELECT 'x1' AS id, [{'from': 'human', 'value': 'Hi', 'timestamp': '12.01.2024 10:00'},
                            {'from': 'gpt', 'value': 'Hello', 'timestamp': '13.01.2024 10:00'}]
               AS conversations""", "parquet")
    [(_, [x1])] = read(path, entity_id="u")
    assert [(m.role, m.content, m.timestamp) for m in x1.messages] == [
        ("user", "Hi", datetime(2024, 1, 12, 10, tzinfo=UTC)),
        ("assistant", "Hello", datetime(2024, 1, 13, 10, tzinfo=UTC))]


def test_a_messages_column_of_json_text_in_a_csv(tmp_path):
    path = tmp_path / "chat.csv"
    text = json.dumps([{"role": "user", "content": "Hi"}])
    path.write_text('id,messages\nc1,"' + text.replace('"', '""') + '"\nc2,"[[["\n')
    [(_, [c1, c2])] = read(path, entity_id="u")
    assert c1.messages[0].content == "Hi"
    assert c2.reason.startswith("row 2: messages: not valid JSON")


# --- the same conversation through every reader: the same verdict ----------------------------

ODD = [("User", "I live in Porto.", "13.01.2024 10:00"), ("ai", "  ", None),
       ("tool", "{}", None), ("assistant", "Nice!", "yesterday")]
BAD = [("user", "hi", None), ("robot", "beep", None)]


def through_every_reader(tmp_path, cid, rows):
    """The conversation read from CSV, Parquet, both JSONL layouts and a seed file."""
    messages = [{"role": r, "content": c, **({"timestamp": t} if t else {})}
                for r, c, t in rows]
    duck = duckdb.connect()
    duck.execute("CREATE TABLE t (conversation_id VARCHAR, role VARCHAR, content VARCHAR, "
                 "timestamp VARCHAR)")
    duck.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(cid, *row) for row in rows])
    out = {}
    for fmt in ("csv", "parquet"):
        path = tmp_path / f"{cid}.{fmt}"
        duck.execute(f"COPY t TO '{path}' " + ("(HEADER)" if fmt == "csv" else
                                                  "(FORMAT parquet)"))
        [(_, [out[fmt]])] = read(path, entity_id="u")
    lines = tmp_path / f"{cid}-conversations.jsonl"
    lines.write_text(json.dumps({"id": cid, "messages": messages}) + "\n")
    per_message = tmp_path / f"{cid}-messages.jsonl"
    per_message.write_text("".join(json.dumps({"conversation_id": cid, **m}) + "\n"
                                   for m in messages))
    for name, path in (("jsonl", lines), ("message lines", per_message)):
        [out[name]] = [c for _, c in check_conversations(next(read_jsonl(path, entity_id="u")))]
    seed = SeedData.for_conversations(entity_id="u", conversations=[
        {"id": cid, "messages": messages}])
    [(_, out["seed"])] = list(check_conversations(seed))
    return out


def without_locations(text):
    return re.sub(r"(row|line) \d+( messages\[\d+\])?|messages\[\d+\]", "<where>", text)


def test_every_reader_gives_the_same_verdict_and_wording(tmp_path):
    odd = through_every_reader(tmp_path, "odd", ODD)
    assert all(isinstance(c, Conversation) for c in odd.values()), odd
    assert {c.messages for c in odd.values()} == {odd["csv"].messages}
    assert {tuple(without_locations(w) for w in c.warnings) for c in odd.values()} == {(
        "empty message left out (<where>)", "tool message left out (<where>)",
        "unreadable timestamp left empty (<where>: 'yesterday')")}
    bad = through_every_reader(tmp_path, "bad", BAD)
    assert all(isinstance(c, Invalid) for c in bad.values()), bad
    assert len({without_locations(c.reason) for c in bad.values()}) == 1
