"""JSON Lines: both layouts, entity runs, broken lines, contiguity, laziness; and the rules
every reader shares (validation's), seen through JSONL: timestamps decided once per file,
roles, empty messages, ids, unstorable text, formats without ids, deep nesting."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memori_nb import Conversation, InvalidInputError, Memori
from memori_nb.sources import read_jsonl
from memori_nb.timestamps import AmbiguousTimestampsError
from memori_nb.validation import Invalid, check_conversations

UTC = timezone.utc


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


def parsed(seed):
    """The seed's conversations as validation judges them: Conversation or Invalid."""
    return [item for _, item in check_conversations(seed)]


def flatten(seeds):
    """[(entity_id, [conversation ids or Invalid])] reading everything."""
    out = []
    for seed in seeds:
        out.append((seed.entity_id, [i.id if isinstance(i, Conversation) else i
                                     for i in parsed(seed)]))
    return out


def read_one(path, **kwargs):
    """The items of a file of one entity ("u")."""
    seeds = read_jsonl(path, entity_id="u", **kwargs)
    items = parsed(next(seeds))
    assert next(seeds, None) is None
    return items


# --- layout (a): one conversation per line ------------------------------------------------

def test_one_conversation_per_line(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       conv("c1", "I have a dog named Rex.", "Nice!", title="Dogs 🐶"),
                       "",
                       conv("c2", "Hello"))
    seed = next(read_jsonl(path, entity_id="u1"))
    assert seed.entity_id == "u1" and seed.size is None
    first, second = parsed(seed)
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
                       {"id": "c5", "messages": []},
                       conv("c3", ""),
                       {"id": "c6"},
                       conv("c4", "also fine"))
    [(entity, items)] = flatten(read_jsonl(path, entity_id="u"))
    assert items[0] == "c1" and items[-1] == "c4"
    broken, not_object, no_messages, empty, missing = items[1:6]
    assert (broken.conversation_id, not_object.conversation_id) == ("line 2", "line 3")
    assert broken.reason.startswith("line 2: not valid JSON")
    assert not_object.reason == "line 3: expected a JSON object, got list"
    assert no_messages.reason == "conversation 'c5': line 4: messages is empty"
    assert empty.conversation_id == "c3"
    assert empty.reason.startswith("conversation 'c3': nothing left to send")
    assert "empty message left out" in empty.reason
    assert missing.reason == "conversation 'c6': line 6: missing 'messages'"


def test_a_broken_line_says_what_is_wrong_and_where_in_plain_words(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(conv("c1", "fine")) + "\n"
                    + '{"id": "c2", "messages": [{"content": "a\tb"}]}\n'  # a raw tab
                    + '{"id": "c3", "messages": [{"content": "cut off')  # a download cut short
    _, broken_tab, cut = read_one(path)
    assert broken_tab.reason == "line 2: not valid JSON (Invalid control character at column 41)"
    assert cut.reason == "line 3: not valid JSON (Unterminated string starting at column 39)"


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
                       conv("c2", "hi", entity_id=True))
    [(entity, items)] = flatten(read_jsonl(path))
    assert items[1].reason == ("line 2: entity_id must be a non-empty string or an integer, "
                               "got True")


# --- layout (b): one message per line -----------------------------------------------------

def test_one_message_per_line(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "I moved to Oslo ❄️", timestamp="2024-01-02T10:00:00Z",
                           title="Moving"),
                       msg("c1", "assistant", "Welcome!", timestamp=1704189660),
                       msg("c2", "user", "Another chat"))
    seed = next(read_jsonl(path, entity_id="u1"))
    c1, c2 = parsed(seed)
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


def test_ids_that_join_to_the_same_text_are_different_conversations(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("b:c", "user", "one", entity_id="a"),
                       msg("c", "user", "two", entity_id="a:b"),
                       msg("b:c", "user", "three", entity_id="a"))
    assert [(e, [i if isinstance(i, str) else "invalid" for i in items])
            for e, items in flatten(read_jsonl(path))] == [
        ("a", ["b:c"]), ("a:b", ["c"]), ("a", ["invalid"])]


def test_bad_message_lines_make_their_conversation_invalid_naming_lines(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "ok"),
                       msg("c1", "robot", "hm"),
                       msg("c1", "assistant", "   "),
                       msg("c1", "user", "when?", timestamp="yesterday"),
                       msg("c1", "cyborg", "beep"),
                       msg("c2", "user", "fine"))
    [(entity, items)] = flatten(read_jsonl(path, entity_id="u"))
    bad, good = items
    assert bad.conversation_id == "c1"
    assert bad.reason.startswith("conversation 'c1': line 2: role 'robot' is not one of "
                                 "user, assistant, system")
    assert "; line 5: role 'cyborg'" in bad.reason
    assert good == "c2"


def test_odd_message_lines_are_warnings_not_failures(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "User", "ok"),
                       msg("c1", "assistant", "   "),
                       msg("c1", "user", "when?", timestamp="yesterday"),
                       msg("c1", "bot", "now"))
    [c1] = read_one(path)
    assert [(m.role, m.content) for m in c1.messages] == [
        ("user", "ok"), ("user", "when?"), ("assistant", "now")]
    assert c1.warnings == ("empty message left out (line 2)",
                           "unreadable timestamp left empty (line 3: 'yesterday')")


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
    assert [c.id for c in parsed(seed)] == ["42"]


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
    assert [c.id for c in parsed(seed)] == ["c1", "c2"]


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
    assert next(iter(first.conversations))["id"] == "c0"
    assert len(pulled) <= 3


def test_moving_to_the_next_seed_data_skips_the_rest_of_the_current_one(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       *[conv(f"c{i}", "x", entity_id=f"e{i // 3}") for i in range(9)])
    seeds = read_jsonl(path)
    first = next(seeds)
    next(iter(first.conversations))
    second = next(seeds)
    assert second.entity_id == "e1"
    assert [c.id for c in parsed(second)] == ["c3", "c4", "c5"]


def test_a_broken_tail_still_yields_the_early_records(tmp_path):
    path = tmp_path / "truncated.jsonl"
    path.write_text(json.dumps(conv("c1", "hi")) + "\n" + json.dumps(conv("c2", "ho"))[:20])
    seed = next(read_jsonl(path, entity_id="u"))
    first, tail = parsed(seed)
    assert first.id == "c1"
    assert tail.reason.startswith("line 2: not valid JSON")


def test_an_open_file_can_be_read(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "hi"))
    with open(path, encoding="utf-8") as handle:
        seed = next(read_jsonl(handle, entity_id="u"))
        assert [c.id for c in parsed(seed)] == ["c1"]


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
    assert [c["id"] for c in second.conversations] == ["c2"]
    with pytest.raises(InvalidInputError, match="conversations of entity 'a' were passed "
                                                "over"):
        list(first.conversations)


# --- timestamps: one rule for the file --------------------------------------------------------

def timed(cid, *stamps, **extra):
    return {"id": cid, "messages": [{"role": "user", "content": f"message {i}", "timestamp": s}
                                    for i, s in enumerate(stamps)], **extra}


def times(conversation):
    return [m.timestamp for m in conversation.messages]


def test_a_file_that_proves_day_first_is_read_day_first(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       timed("c1", "12.01.2024, 13:42:02", "02.02.2024, 09:00:00"),
                       timed("c2", "13.01.2024, 08:00:00"))
    c1, c2 = read_one(path)
    assert times(c1) == [datetime(2024, 1, 12, 13, 42, 2, tzinfo=UTC),
                         datetime(2024, 2, 2, 9, tzinfo=UTC)]
    assert times(c2) == [datetime(2024, 1, 13, 8, tzinfo=UTC)]
    assert not c1.warnings


def test_message_lines_that_prove_day_first_are_read_day_first(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl",
                       msg("c1", "user", "hi", timestamp="12/01/2024 13:42"),
                       msg("c1", "assistant", "yo", created_at="31/01/2024 13:43"))
    [c1] = read_one(path)
    assert times(c1) == [datetime(2024, 1, 12, 13, 42, tzinfo=UTC),
                         datetime(2024, 1, 31, 13, 43, tzinfo=UTC)]


def test_a_file_whose_dates_could_be_either_asks(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       timed("c1", "12.01.2024, 13:42:02", "11.02.2024, 09:00:00"))
    with pytest.raises(AmbiguousTimestampsError, match="could be day/month or month/day") as e:
        read_jsonl(path, entity_id="u")
    assert str(path) in str(e.value) and "dayfirst=True" in str(e.value)
    assert isinstance(e.value, InvalidInputError)
    [c1] = read_one(path, dayfirst=False)
    assert times(c1)[0] == datetime(2024, 12, 1, 13, 42, 2, tzinfo=UTC)
    [c1] = read_one(path, timestamp_format="%d.%m.%Y, %H:%M:%S")
    assert times(c1)[0] == datetime(2024, 1, 12, 13, 42, 2, tzinfo=UTC)


def test_a_file_with_dates_written_both_ways_asks(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", timed("c1", "13.01.2024"),
                       timed("c2", "01.13.2024"))
    with pytest.raises(AmbiguousTimestampsError, match="both day first .* and month first"):
        read_jsonl(path, entity_id="u")


def test_dates_inside_message_text_do_not_count(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       conv("c1", "I was born on 03/04/1990.", "Noted.",
                            created_at="2024-01-02T10:00:00Z"))
    [c1] = read_one(path)
    assert times(c1) == [datetime(2024, 1, 2, 10, tzinfo=UTC)] * 2


def test_an_unreadable_timestamp_is_a_warning(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       timed("c1", "2024-01-02T10:00:00+02:00", "last tuesday", 1704189660000))
    [c1] = read_one(path)
    assert times(c1) == [datetime(2024, 1, 2, 8, tzinfo=UTC), None,
                         datetime(2024, 1, 2, 10, 1, tzinfo=UTC)]
    assert c1.warnings == ("unreadable timestamp left empty "
                           "(line 1 messages[1]: 'last tuesday')",)


def test_lines_given_as_an_iterable_leave_undecidable_dates_empty(tmp_path):
    """Nothing can be scanned ahead in an iterable: a date that could be read both ways is
    not guessed, unless dayfirst says how."""
    lines = [json.dumps(timed("c1", "12.01.2024", "13.01.2024"))]
    [c1] = parsed(next(read_jsonl(lines, entity_id="u")))
    assert times(c1) == [None, datetime(2024, 1, 13, tzinfo=UTC)]
    assert "unreadable timestamp left empty" in c1.warnings[0]
    [c1] = parsed(next(read_jsonl(lines, entity_id="u", dayfirst=True)))
    assert times(c1) == [datetime(2024, 1, 12, tzinfo=UTC), datetime(2024, 1, 13, tzinfo=UTC)]


def test_an_open_file_is_scanned_then_read_from_where_it_was(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", timed("c1", "12.01.2024"),
                       timed("c2", "13.01.2024"))
    with open(path, encoding="utf-8") as handle:
        c1, c2 = parsed(next(read_jsonl(handle, entity_id="u")))
    assert times(c1) == [datetime(2024, 1, 12, tzinfo=UTC)]
    with open(path, "rb") as handle:
        assert len(parsed(next(read_jsonl(handle, entity_id="u")))) == 2


def test_the_conversation_time_is_used_for_messages_without_one(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       {"id": "c1", "created_at": "2024-03-01T10:00:00Z", "messages": [
                           {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "yo",
                            "timestamp": "2024-03-01T10:05:00Z"}]},
                       {"id": "c2", "create_time": 1709287200.0,
                        "messages": [{"role": "user", "content": "hi"}]})
    c1, c2 = read_one(path)
    assert times(c1) == [datetime(2024, 3, 1, 10, tzinfo=UTC),
                         datetime(2024, 3, 1, 10, 5, tzinfo=UTC)]
    assert times(c2) == [datetime(2024, 3, 1, 10, tzinfo=UTC)]


# --- roles, content, ids, text ----------------------------------------------------------------

def test_roles_are_matched_without_case_and_aliases_are_mapped(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", {"id": "c1", "messages": [
        {"role": "User", "content": "hi"}, {"role": "human", "content": "again"},
        {"role": "ai", "content": "hello"}, {"role": "tool", "content": "{}"},
        {"role": "Agent", "content": "mapped"}]})
    [c1] = read_one(path, role_map={"agent": "assistant"})
    assert [m.role for m in c1.messages] == ["user", "user", "assistant", "assistant"]
    assert c1.warnings == ("tool message left out (line 1 messages[3])",)
    [bad] = read_one(path)
    assert isinstance(bad, Invalid)
    assert bad.reason.startswith("conversation 'c1': line 1 messages[4]: role 'Agent'")


def test_an_empty_message_is_left_out_and_nothing_left_fails(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "hi", "  ", ""),
                       conv("c2", "", None))
    c1, c2 = read_one(path)
    assert [m.content for m in c1.messages] == ["hi"]
    assert c1.warnings == ("empty message left out (2: line 1 messages[1], "
                           "line 1 messages[2])",)
    assert isinstance(c2, Invalid)
    assert c2.reason.startswith("conversation 'c2': nothing left to send")


def test_ids_lose_surrounding_whitespace(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       conv(" c1 ", "hi", entity_id=" Jason "), conv("c2", "ho",
                                                                    entity_id="Jason"))
    seeds = read_jsonl(path)
    seed = next(seeds)
    assert seed.entity_id == "Jason"
    assert seed.warnings == ("entity id whitespace trimmed (' Jason ')",)
    c1, c2 = parsed(seed)  # one run: the same entity once trimmed
    assert (c1.id, c1.warnings) == ("c1", ("id whitespace trimmed (' c1 ')",))
    assert next(seeds, None) is None


def test_a_lone_surrogate_is_made_safe_with_a_warning(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text('{"id": "c1", "title": "t\\ud800", "messages": [{"role": "user", '
                    '"content": "broken \\ud800 text"}]}\n', encoding="utf-8")
    [c1] = read_one(path)
    assert c1.messages[0].content == "broken \ufffd text" and c1.title == "t\ufffd"
    [warning] = c1.warnings
    assert warning.startswith("unstorable characters replaced") and "line 1 messages[0]" in warning
    c1.messages[0].content.encode("utf-8")  # storable


# --- formats without ids, ShareGPT, LangChain -------------------------------------------------

FINE_TUNING = [
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "What is 6*7?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "call_1", "type": "function",
                       "function": {"name": "calc", "arguments": "{\"x\": \"6*7\"}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                  {"role": "assistant", "content": "42."}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
]


def test_openai_fine_tuning_lines_get_the_same_id_on_every_read(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", *FINE_TUNING)
    first, second = read_one(path)
    assert first.id.startswith("sha256:") and first.id != second.id
    assert [c.id for c in read_one(path)] == [first.id, second.id]
    assert [m.role for m in first.messages] == ["system", "user", "assistant"]
    assert "tool message left out (line 1 messages[3])" in first.warnings
    # the same conversation elsewhere in another file: the same id
    other = write_lines(tmp_path / "other.jsonl", FINE_TUNING[1])
    assert read_one(other)[0].id == second.id


def test_sharegpt_and_langchain_lines(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl",
                       {"id": "s1", "conversations": [{"from": "human", "value": "Hi"},
                                                      {"from": "gpt", "value": "Hello"}]},
                       {"messages": [{"type": "human", "data": {"content": "I like tea."}},
                                     {"type": "ai", "data": {"content": "Noted."}}]})
    s1, lc = read_one(path)
    assert [(m.role, m.content) for m in s1.messages] == [("user", "Hi"),
                                                          ("assistant", "Hello")]
    assert [(m.role, m.content) for m in lc.messages] == [("user", "I like tea."),
                                                          ("assistant", "Noted.")]


# --- what could crash ---------------------------------------------------------------------------

def test_json_nested_too_deeply_fails_its_line_only(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = write_lines(tmp_path / "chats.jsonl", conv("c1", "fine"), deep,
                       '{"id": "c2", "messages": ' + deep + "}", conv("c3", "fine too"))
    c1, line2, line3, c3 = read_one(path)
    assert (c1.id, c3.id) == ("c1", "c3")
    assert (line2.conversation_id, line2.reason) == ("line 2",
                                                     "line 2: JSON nested too deeply to read")
    assert line3.reason == "line 3: JSON nested too deeply to read"


def test_a_first_line_nested_too_deeply_does_not_hide_the_file(tmp_path):
    path = write_lines(tmp_path / "messages.jsonl", "[" * 100_000 + "]" * 100_000,
                       msg("c1", "user", "hi"))
    deep, c1 = read_one(path)
    assert deep.reason == "line 1: JSON nested too deeply to read" and c1.id == "c1"
    only = write_lines(tmp_path / "deep.jsonl", "[" * 100_000)
    with pytest.raises(InvalidInputError, match="line 1: JSON nested too deeply"):
        read_jsonl(only, entity_id="u")
