"""Every reader gives the same conversation the same verdict: one set of rules.

The same bad and odd conversations are written as a seed file, JSONL (a conversation per
line, a message per line), CSV, Parquet, a long and a nested DataFrame, and ShareGPT; each is
read and judged, and the verdicts, locations aside, must be equal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from datetime import datetime, timezone

import duckdb
import pandas as pd
import pytest

from memori_nb import to_seeds
from memori_nb.models import Conversation
from memori_nb.validation import check_conversations, count_warnings

UTC = timezone.utc

# (id, [(role, content, timestamp)]); timestamps as people's data writes them.
CASES = [
    ("roles", [("User", "I live in Oslo.", None), ("human", "I have a cat.", None),
               ("ai", "Nice.", None), ("tool", "{}", None), ("Assistant", "Ok.", None)]),
    ("one-empty", [("user", "I work at Acme.", None), ("assistant", "", None)]),
    ("all-empty", [("user", "", None), ("assistant", "   ", None)]),
    ("bad-time", [("user", "I love jazz.", "next tuesday-ish")]),
    ("day-first", [("user", "first", "12.01.2024, 13:42:02"),
                   ("assistant", "second", "29.01.2024, 08:00:00")]),
    (" spaced ", [("user", "I play chess.", None)]),
    ("unknown-role", [("user", "hi", None), ("robot", "beep", None)]),
]
# Text only JSON and DataFrames can carry: files in UTF-8 cannot hold a lone surrogate.
SURROGATE = ("surrogate", [("user", "I live in Oslo \ud800 now.", None)])


def as_seed_document(cases):
    return {"entity_id": "u1", "conversations": [
        {"id": cid, "messages": [_message(r, c, t) for r, c, t in messages]}
        for cid, messages in cases]}


def _message(role, content, timestamp):
    message = {"role": role, "content": content}
    if timestamp is not None:
        message["timestamp"] = timestamp
    return message


def long_rows(cases):
    return [{"entity_id": "u1", "conversation_id": cid, "role": r, "content": c,
             "timestamp": t} for cid, messages in cases for r, c, t in messages]


def write(kind, cases, tmp_path):
    """The cases in one format: what to_seeds takes, and its keywords."""
    if kind == "seed":
        path = tmp_path / "seed.json"
        path.write_text(json.dumps(as_seed_document(cases)))
        return path, {}
    if kind == "jsonl-conversations":
        path = tmp_path / "conversations.jsonl"
        path.write_text("\n".join(json.dumps(c) for c in as_seed_document(cases)[
            "conversations"]))
        return path, {"entity_id": "u1"}
    if kind == "jsonl-messages":
        path = tmp_path / "messages.jsonl"
        path.write_text("\n".join(json.dumps({k: v for k, v in row.items() if v is not None})
                                  for row in long_rows(cases)))
        return path, {}
    if kind in ("csv", "parquet"):
        frame = pd.DataFrame(long_rows(cases))
        path = tmp_path / f"messages.{kind}"
        if kind == "csv":
            frame.to_csv(path, index=False)
        else:  # through DuckDB: pandas would need pyarrow
            connection = duckdb.connect()
            connection.register("frame", frame)
            connection.execute(f"COPY frame TO '{path}' (FORMAT parquet)")
            connection.close()
        return path, {}
    if kind == "dataframe-long":
        return pd.DataFrame(long_rows(cases)), {}
    if kind == "dataframe-nested":
        document = as_seed_document(cases)
        return pd.DataFrame({"id": [c["id"] for c in document["conversations"]],
                             "messages": [c["messages"] for c in document["conversations"]]}), \
            {"entity_id": "u1"}
    if kind == "sharegpt":
        path = tmp_path / "sharegpt.json"
        path.write_text(json.dumps([{"id": cid, "conversations": [
            {"from": r, "value": c} for r, c, _ in messages]} for cid, messages in cases]))
        return path, {"entity_id": "u1", "format": "sharegpt"}
    raise AssertionError(kind)


# Locations differ by reader ("row 3", "line 7", "messages[2]"); everything else must not.
_PLACE = (r"(?:rows? \S+?|lines? [\d-]+|messages\[\d+\]|[\w.]+\.\w+: record \d+"
          r"|conversations\[\d+\])")
_LOCATION = re.compile(rf"{_PLACE}(?:[ ,:]+{_PLACE})*(?:: |(?=\)))")


def verdicts(data, options):
    out = {}
    for seed in to_seeds(data, **options):
        for _, parsed in check_conversations(seed):
            if isinstance(parsed, Conversation):
                out[parsed.id] = ("ok", [(m.role, m.content, m.timestamp)
                                         for m in parsed.messages],
                                  dict(count_warnings(parsed.warnings)))
            else:
                out[parsed.conversation_id] = ("failed", _LOCATION.sub("", parsed.reason))
    return out


READERS = ["seed", "jsonl-conversations", "jsonl-messages", "csv", "parquet",
           "dataframe-long", "dataframe-nested"]


@pytest.mark.parametrize("kind", READERS[1:])
def test_every_reader_gives_the_verdict_the_seed_file_gives(kind, tmp_path):
    expected = verdicts(*write("seed", CASES, tmp_path))
    assert verdicts(*write(kind, CASES, tmp_path)) == expected


# Integer ids, as a database export writes them: entity 7's conversations 1 and 2.
INTEGER_IDS = [(7, 1, "user", "I live in Paris."), (7, 1, "assistant", "Nice."),
               (7, 2, "user", "I love Rome.")]


def integer_ids(kind, tmp_path):
    """INTEGER_IDS in one format: what to_seeds takes, and its keywords."""
    rows = [{"entity_id": e, "conversation_id": c, "role": r, "content": t}
            for e, c, r, t in INTEGER_IDS]
    conversations = [{"entity_id": 7, "id": cid, "messages": [
        {"role": r, "content": t} for _, c, r, t in INTEGER_IDS if c == cid]} for cid in (1, 2)]
    if kind == "seed":
        path = tmp_path / "seed.json"
        path.write_text(json.dumps({"entity_id": 7, "conversations": conversations}))
    elif kind == "jsonl-conversations":
        path = tmp_path / "conversations.jsonl"
        path.write_text("\n".join(map(json.dumps, conversations)))
    elif kind == "jsonl-messages":
        path = tmp_path / "messages.jsonl"
        path.write_text("\n".join(map(json.dumps, rows)))
    elif kind == "csv":
        path = tmp_path / "messages.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
    elif kind == "dataframe-long":
        return pd.DataFrame(rows), {}
    elif kind == "sharegpt":  # ids only: the file names no entity
        path = tmp_path / "sharegpt.json"
        path.write_text(json.dumps([{"id": c["id"], "conversations": [
            {"from": m["role"], "value": m["content"]} for m in c["messages"]]}
            for c in conversations]))
        return path, {"entity_id": "7", "format": "sharegpt"}
    else:
        raise AssertionError(kind)
    return path, {}


@pytest.mark.parametrize("kind", ["seed", "jsonl-conversations", "jsonl-messages", "csv",
                                  "dataframe-long", "sharegpt"])
def test_integer_ids_are_their_decimal_text_through_every_reader(kind, tmp_path):
    data, options = integer_ids(kind, tmp_path)
    read = [(seed.entity_id, parsed.id, [m.content for m in parsed.messages])
            for seed in to_seeds(data, **options) for _, parsed in check_conversations(seed)]
    assert read == [("7", "1", ["I live in Paris.", "Nice."]), ("7", "2", ["I love Rome."])]


def test_the_verdicts_are_the_rules():
    got = verdicts(*write("dataframe-nested", CASES, None))
    assert got["roles"][1] == [("user", "I live in Oslo.", None), ("user", "I have a cat.", None),
                               ("assistant", "Nice.", None), ("assistant", "Ok.", None)]
    assert got["roles"][2] == {"tool message left out": 1}
    assert got["one-empty"][2] == {"empty message left out": 1}
    assert got["all-empty"] == ("failed", "conversation 'all-empty': nothing left to send "
                                          "(empty message left out: 2)")
    assert got["bad-time"][1][0][2] is None
    assert got["bad-time"][2] == {"unreadable timestamp left empty": 1}
    assert got["day-first"][1][0][2] == datetime(2024, 1, 12, 13, 42, 2, tzinfo=UTC)
    assert got["spaced"][2] == {"id whitespace trimmed": 1}
    assert got["unknown-role"][0] == "failed" and "role 'robot'" in got["unknown-role"][1]


@pytest.mark.parametrize("kind", ["jsonl-conversations", "dataframe-long", "dataframe-nested"])
def test_a_lone_surrogate_is_made_safe_alike_everywhere(kind, tmp_path):
    expected = verdicts(*write("seed", [SURROGATE], tmp_path))
    assert expected["surrogate"][1][0][1] == "I live in Oslo \ufffd now."
    assert verdicts(*write(kind, [SURROGATE], tmp_path)) == expected


def test_sharegpt_gives_the_same_roles_and_left_outs(tmp_path):
    cases = [case for case in CASES if case[0] in ("roles", "one-empty", "all-empty",
                                                     " spaced ", "unknown-role")]
    expected = verdicts(*write("seed", cases, tmp_path))
    assert verdicts(*write("sharegpt", cases, tmp_path)) == expected


LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"


def locomo_rows():
    """LoCoMo's sessions from the first speaker's view, one row per turn; each session's
    time (``1:56 pm on 8 May, 2023``) on its first turn, as exports often carry it."""
    rows = []
    for sample in json.loads(LOCOMO.read_text()):
        talk = sample["conversation"]
        me = talk["speaker_a"]
        for key in sorted(k for k in talk if re.fullmatch(r"session_\d+", k)):
            for turn in talk[key]:
                rows.append({"entity_id": f"{sample['sample_id']}:{me}", "conversation_id": key,
                             "role": "user" if turn["speaker"] == me else "assistant",
                             "content": turn["text"], "timestamp": talk[f"{key}_date_time"]})
    return rows


@pytest.mark.skipif(not LOCOMO.exists(), reason="../shared/data/locomo is not here")
@pytest.mark.parametrize("kind", ["jsonl-messages", "csv", "parquet"])
def test_real_chat_history_gets_the_same_verdict_through_every_reader(kind, tmp_path):
    rows = locomo_rows()
    frame = pd.DataFrame(rows)

    def by_entity(data, options):
        out = {}
        for seed in to_seeds(data, **options):
            for _, parsed in check_conversations(seed):
                assert isinstance(parsed, Conversation), parsed
                out[(seed.entity_id, parsed.id)] = (
                    [(m.role, m.content, m.timestamp) for m in parsed.messages],
                    parsed.warnings)
        return out

    expected = by_entity(frame, {})
    assert len(expected) == 272 and sum(len(v[0]) for v in expected.values()) == len(rows)
    assert all(not warnings for _, warnings in expected.values())
    # "1:56 pm on 8 May, 2023": read as 13:56 UTC, never guessed otherwise.
    first = expected[("conv-26:Caroline", "session_1")][0][0][2]
    assert first == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    if kind == "jsonl-messages":
        path = tmp_path / "locomo.jsonl"
        path.write_text("\n".join(json.dumps(row) for row in rows))
    else:
        path = tmp_path / f"locomo.{kind}"
        if kind == "csv":
            frame.to_csv(path, index=False)
        else:
            connection = duckdb.connect()
            connection.register("frame", frame)
            connection.execute(f"COPY frame TO '{path}' (FORMAT parquet)")
            connection.close()
    assert by_entity(path, {}) == expected
