"""JSON Lines: both layouts, entity runs, broken lines, contiguity, laziness."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memori_nb import Conversation, InvalidInputError, Memori
from memori_nb.sources import read_jsonl
from memori_nb.validation import Invalid


def write_lines(path: Path, *records) -> Path:
    """Write records (dicts as JSON, strings as they are) one per line."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def conv(cid, *contents, **extra):
    roles = ["user", "assistant"]
    return {"id": cid, "messages": [{"role": roles[i % 2], "content": c}
                                    for i, c in enumerate(contents)], **extra}


def msg(cid, role, content, **extra):
    return {"conversation_id": cid, "role": role, "content": content, **extra}


def flatten(seeds):
    """[(entity_id, [conversation ids or Invalid reasons])] reading everything."""
    out = []
    for seed in seeds:
        items = list(seed.conversations)
        out.append((seed.entity_id, [i.id if isinstance(i, Conversation) else i
                                     for i in items]))
    return out


# --- layout (a): one conversation per line ------------------------------------------------

def test_one_conversation_per_line(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       conv("c1", "I have a dog named Rex.", "Nice!", title="Dogs 🐶"),
                       "",
                       conv("c2", "Hello"))
    seed = next(read_jsonl(path, entity_id="u1"))
    assert seed.entity_id == "u1" and seed.size is None
    first, second = seed.conversations
    assert first.title == "Dogs 🐶"
    assert [(m.role, m.content) for m in first.messages] == [
        ("user", "I have a dog named Rex."), ("assistant", "Nice!")]
    assert second.id == "c2"


def test_records_carry_their_entity_and_runs_become_seed_data(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       conv("c1", "a", entity_id="alice"), conv("c2", "b", entity_id="alice"),
                       conv("c3", "c", entity_id="bob"), conv("c4", "d"),
                       conv("c5", "e", entity_id="alice", process_id="bot-1"))
    assert [(e, ids) for e, ids in flatten(read_jsonl(path, entity_id="dflt"))] == [
        ("alice", ["c1", "c2"]), ("bob", ["c3"]), ("dflt", ["c4"]), ("alice", ["c5"])]
    seeds = list(read_jsonl(path, entity_id="dflt"))
    assert seeds[-1].process_id == "bot-1" and seeds[0].process_id is None


def test_a_broken_line_is_invalid_naming_the_line_and_the_rest_goes_on(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       conv("c1", "fine"),
                       '{"id": "c2", "messages": [',
                       "[1, 2]",
                       {"messages": []},
                       conv("c3", ""),
                       conv("c4", "also fine"))
    [(entity, items)] = flatten(read_jsonl(path, entity_id="u"))
    assert items[0] == "c1" and items[-1] == "c4"
    broken, not_object, no_id, empty = items[1:5]
    assert (broken.conversation_id, not_object.conversation_id) == ("line 2", "line 3")
    assert broken.reason.startswith("line 2: not valid JSON")
    assert not_object.reason == "line 3: expected a JSON object, got list"
    assert no_id.reason == "line 4: missing 'id'"
    assert empty.conversation_id == "c3"
    assert empty.reason == "line 5: conversation 'c3': messages[0].content is empty"


def test_a_record_without_entity_and_no_entity_id_asks_for_one(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "hi"))
    with pytest.raises(InvalidInputError, match="line 1 has no entity_id: pass --entity-id"):
        read_jsonl(path)


def test_a_later_record_without_entity_fails_when_reached(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "hi", entity_id="a"),
                       conv("c2", "hi"))
    seeds = read_jsonl(path)
    first = next(seeds)
    with pytest.raises(InvalidInputError, match="line 2 has no entity_id"):
        list(first.conversations)


def test_a_bad_entity_id_is_invalid_for_that_record(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "hi", entity_id="a"),
                       conv("c2", "hi", entity_id=7))
    [(entity, items)] = flatten(read_jsonl(path))
    assert items[1].reason == "line 2: entity_id must be a non-empty string, got 7"


# --- layout (b): one message per line -----------------------------------------------------

def test_one_message_per_line(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "I moved to Oslo ❄️", timestamp="2024-01-02T10:00:00Z",
                           title="Moving"),
                       msg("c1", "assistant", "Welcome!", timestamp=1704189660),
                       msg("c2", "user", "Another chat"))
    seed = next(read_jsonl(path, entity_id="u1"))
    c1, c2 = seed.conversations
    assert c1.title == "Moving"
    assert [(m.role, m.content) for m in c1.messages] == [("user", "I moved to Oslo ❄️"),
                                                          ("assistant", "Welcome!")]
    assert c1.messages[0].timestamp == datetime(2024, 1, 2, 10, 0, tzinfo=timezone.utc)
    assert c1.messages[1].timestamp == datetime(2024, 1, 2, 10, 1, tzinfo=timezone.utc)
    assert c2.id == "c2" and c2.messages[0].timestamp is None


def test_message_lines_group_by_entity_runs(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "a", entity_id="alice"),
                       msg("c1", "assistant", "b", entity_id="alice"),
                       msg("c2", "user", "c", entity_id="alice"),
                       msg("c1", "user", "d", entity_id="bob"))
    assert flatten(read_jsonl(path)) == [("alice", ["c1", "c2"]), ("bob", ["c1"])]


def test_a_conversation_that_reappears_is_not_contiguous(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("x", "user", "one"), msg("x", "assistant", "two"),
                       msg("y", "user", "other"),
                       msg("x", "user", "three"), msg("x", "assistant", "four"))
    [(entity, items)] = flatten(read_jsonl(path, entity_id="u"))
    assert items[:2] == ["x", "y"]
    late = items[2]
    assert isinstance(late, Invalid) and late.conversation_id == "x"
    assert late.reason.startswith("conversation 'x': its messages are not contiguous "
                                  "(lines 2 and 4)")


def test_bad_message_lines_make_their_conversation_invalid_naming_lines(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "ok"),
                       msg("c1", "bot", "hm"),
                       msg("c1", "assistant", "   "),
                       msg("c1", "user", "when?", timestamp="yesterday"),
                       msg("c2", "user", "fine"))
    [(entity, items)] = flatten(read_jsonl(path, entity_id="u"))
    bad, good = items
    assert bad.conversation_id == "c1"
    assert bad.reason == ("conversation 'c1': line 2: role 'bot' is not one of user, "
                          "assistant, system; line 3: content is empty; line 4: timestamp "
                          "'yesterday' is not a date and time")
    assert good == "c2"


def test_a_broken_line_inside_a_conversation_is_that_conversations_problem(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "one"), '{"conversation_id": "c1", "ro',
                       msg("c1", "assistant", "two"),
                       msg("c2", "user", "three"), "not json at all",
                       msg("c3", "user", "four"), "{}")
    [(entity, items)] = flatten(read_jsonl(path, entity_id="u"))
    assert [i if isinstance(i, str) else i.conversation_id for i in items] == [
        "c1", "c2", "line 5", "c3", "line 7"]
    assert items[0].reason.startswith("conversation 'c1': line 2: not valid JSON")
    assert items[2].reason.startswith("line 5: not valid JSON")
    assert items[4].reason == "line 7: missing 'conversation_id'"


def test_numeric_conversation_ids_become_strings(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl", msg(42, "user", "hi"))
    seed = next(read_jsonl(path, entity_id="u"))
    assert [c.id for c in seed.conversations] == ["42"]


# --- the file as a whole --------------------------------------------------------------------

@pytest.mark.parametrize("text, problem", [
    ('[{"id": "c1"}]\n', "line 1: it is a JSON list"),
    ("{\n", "line 1: not valid JSON"),
    ('{"hello": 1}\n', "line 1 has neither 'messages' nor 'conversation_id'"),
])
def test_a_file_that_is_not_jsonl_is_one_clear_error(tmp_path, text, problem):
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=problem):
        read_jsonl(path, entity_id="u")


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        read_jsonl(tmp_path / "nope.jsonl", entity_id="u")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert list(read_jsonl(tmp_path / "empty.jsonl", entity_id="u")) == []


def test_a_byte_order_mark_and_windows_line_ends_are_fine(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(conv("c1", "hi")).encode() + b"\r\n"
                     + json.dumps(conv("c2", "ho")).encode() + b"\r\n")
    seed = next(read_jsonl(path, entity_id="u"))
    assert [c.id for c in seed.conversations] == ["c1", "c2"]


# --- streaming ------------------------------------------------------------------------------

def test_reading_the_first_conversation_does_not_read_the_whole_file():
    pulled = []

    def lines():
        for i in range(1_000_000):
            pulled.append(i)
            yield json.dumps(conv(f"c{i}", "hello", entity_id=f"e{i // 10}"))
        raise AssertionError("the whole file was read")

    seeds = read_jsonl(lines())
    first = next(seeds)
    assert first.entity_id == "e0"
    assert next(iter(first.conversations)).id == "c0"
    assert len(pulled) <= 3


def test_moving_to_the_next_seed_data_skips_the_rest_of_the_current_one(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       *[conv(f"c{i}", "x", entity_id=f"e{i // 3}") for i in range(9)])
    seeds = read_jsonl(path)
    first = next(seeds)
    next(iter(first.conversations))
    second = next(seeds)
    assert second.entity_id == "e1"
    assert [c.id for c in second.conversations] == ["c3", "c4", "c5"]


def test_a_broken_tail_still_yields_the_early_records(tmp_path):
    path = tmp_path / "truncated.jsonl"
    path.write_text(json.dumps(conv("c1", "hi")) + "\n" + json.dumps(conv("c2", "ho"))[:20])
    seed = next(read_jsonl(path, entity_id="u"))
    first, tail = seed.conversations
    assert first.id == "c1"
    assert tail.reason.startswith("line 2: not valid JSON")


def test_an_open_file_can_be_read(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "hi"))
    with open(path, encoding="utf-8") as handle:
        seed = next(read_jsonl(handle, entity_id="u"))
        assert [c.id for c in seed.conversations] == ["c1"]


def test_seeding_a_jsonl_stream(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "I live in Porto.", entity_id="a"),
                       msg("c2", "user", "I have a cat named Miso.", entity_id="b"),
                       "oops")
    m = Memori(conn=":memory:", backend="local")
    result = asyncio.run(m.seed(read_jsonl(path), keep_results=False))
    assert (result.total, result.successful, result.failed) == (3, 2, 1)
    failures = m.failures()
    assert failures["conversation_id"].tolist() == ["line 3"]
    assert failures["entity_id"].tolist() == ["b"]


def test_reading_a_seed_data_after_moving_past_it_says_so(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "x", entity_id="a"),
                       conv("c2", "y", entity_id="b"))
    seeds = read_jsonl(path)
    first, second = next(seeds), next(seeds)  # taken before reading the first: it streams
    assert [c.id for c in second.conversations] == ["c2"]
    with pytest.raises(InvalidInputError, match="conversations of entity 'a' were passed "
                                                "over"):
        list(first.conversations)
