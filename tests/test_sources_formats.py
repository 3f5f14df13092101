"""ShareGPT and LangChain message files: shapes, ids, what is left out, problems."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memori_nb import Conversation, InvalidInputError, Memori
from memori_nb.sources import read_source
from memori_nb.sources.formats import read_langchain, read_sharegpt
from memori_nb.validation import Invalid, check_conversations


def write(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def validated(seed) -> list:
    """The conversations as the engine sees them: raw records, validated."""
    assert seed.entity_id == "me" and seed.size is None  # streamed
    return [parsed for _, parsed in check_conversations(seed)]


def turn(speaker, text, **extra):
    return {"from": speaker, "value": text, **extra}


def lc(kind, content, **data):
    """A message as LangChain's messages_to_dict writes it."""
    return {"type": kind, "data": {"content": content, "additional_kwargs": {},
                                   "response_metadata": {}, "type": kind, "name": None,
                                   "id": None, **data}}


# --- ShareGPT -------------------------------------------------------------------------------

def sharegpt(path, records, **options):
    return validated(read_sharegpt(write(path, records), entity_id="me", **options))


def test_sharegpt_speakers_become_roles(tmp_path):
    [conv] = sharegpt(tmp_path / "sg.json", [{"id": "s1", "conversations": [
        turn("human", "I adopted a cat named Miso 🐈"), turn("gpt", "Congratulations!"),
        turn("Human", "She is grey."), turn("chatgpt", "Lovely.")]}])
    assert isinstance(conv, Conversation) and conv.id == "s1" and conv.warnings == ()
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "I adopted a cat named Miso 🐈"), ("assistant", "Congratulations!"),
        ("user", "She is grey."), ("assistant", "Lovely.")]


def test_sharegpt_system_prompt_comes_first(tmp_path):
    [conv] = sharegpt(tmp_path / "sg.json", [{"id": "s1", "system": "Be brief.",
                                              "conversations": [turn("human", "Hi")]}])
    assert [(m.role, m.content) for m in conv.messages] == [("system", "Be brief."),
                                                           ("user", "Hi")]


def test_sharegpt_function_turns_and_empty_turns_are_left_out_with_warnings(tmp_path):
    [conv] = sharegpt(tmp_path / "sg.json", [{"id": "s1", "conversations": [
        turn("human", "Weather in Oslo?"), turn("function_call", '{"name": "weather"}'),
        turn("observation", '{"temp": 3}'), turn("gpt", ""), turn("gpt", "3 °C.")]}])
    assert [m.content for m in conv.messages] == ["Weather in Oslo?", "3 °C."]
    assert conv.warnings == ("function_call message left out (conversations[1])",
                             "observation message left out (conversations[2])",
                             "empty message left out (conversations[3])")


def test_sharegpt_ids_derived_when_missing_and_numbers_as_text(tmp_path):
    records = [{"conversations": [turn("human", "Hi"), turn("gpt", "Hello")]},
               {"id": 7, "conversations": [turn("human", "Yo")]}]
    first, second = sharegpt(tmp_path / "sg.json", records)
    again, _ = sharegpt(tmp_path / "again.json", records)
    assert first.id.startswith("sha256:") and first.id == again.id  # stable across runs
    assert second.id == "7"


def test_sharegpt_unknown_speakers_fail_with_a_hint_and_role_map_fixes_them(tmp_path):
    records = [{"id": "s1", "conversations": [turn("human", "Hi"), turn("narrator", "...")]}]
    [failed] = sharegpt(tmp_path / "sg.json", records)
    assert isinstance(failed, Invalid)
    assert "conversations[1]: role 'narrator' is not one of" in failed.reason
    assert "role_map" in failed.reason
    [conv] = sharegpt(tmp_path / "sg.json", records, role_map={"narrator": "assistant"})
    assert [m.role for m in conv.messages] == ["user", "assistant"]


def test_sharegpt_turn_timestamps_follow_the_day_month_rule(tmp_path):
    records = [{"id": "s1", "conversations": [turn("human", "Hi", timestamp="03.04.2024 10:00")]}]
    [unread] = sharegpt(tmp_path / "sg.json", records)
    assert unread.messages[0].timestamp is None  # never guessed
    assert unread.warnings[0].startswith("unreadable timestamp left empty (conversations[0]")
    [conv] = sharegpt(tmp_path / "sg.json", records, dayfirst=True)
    assert conv.messages[0].timestamp == datetime(2024, 4, 3, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("record, label, problem", [
    ("junk", "#0", "sg.json: record 0: expected an object with 'conversations', got str"),
    ({"id": "s9"}, "s9", "missing 'conversations'"),
    ({"id": "s9", "conversations": {}}, "s9", "'conversations' must be a list, got dict"),
    ({"id": "s9", "conversations": []}, "s9", "messages is empty"),
    ({"id": "", "conversations": [turn("human", "x")]}, "#0", "'id' must be a non-empty"),
])
def test_sharegpt_bad_records_fail_alone(tmp_path, record, label, problem):
    good = {"id": "ok", "conversations": [turn("human", "hi")]}
    first, second = sharegpt(tmp_path / "sg.json", [record, good])
    assert isinstance(first, Invalid) and first.conversation_id == label
    assert problem in first.reason
    assert second.id == "ok"


def test_sharegpt_needs_an_entity_id_and_a_sharegpt_file(tmp_path):
    path = write(tmp_path / "sg.json", [{"id": "s1", "conversations": [turn("human", "x")]}])
    with pytest.raises(InvalidInputError, match="ShareGPT files carry no user id"):
        read_sharegpt(path, entity_id=None)
    claude = write(tmp_path / "claude.json", [{"uuid": "c", "chat_messages": []}])
    with pytest.raises(InvalidInputError, match="not a ShareGPT file: it looks like a Claude "
                                                "export"):
        read_sharegpt(claude, entity_id="me")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "s1", "conversations": [{"from": "human", "val')
    with pytest.raises(InvalidInputError, match="broken.json: not valid JSON"):
        read_sharegpt(broken, entity_id="me")


# --- LangChain ------------------------------------------------------------------------------

def langchain(path, document, **options):
    return validated(read_langchain(write(path, document), entity_id="me", **options))


HISTORY = [lc("system", "You are helpful."), lc("human", "I moved to Lisbon."),
           lc("ai", "", tool_calls=[{"name": "search", "args": {}, "id": "t1"}]),
           lc("tool", "Lisbon: sunny", tool_call_id="t1"), lc("ai", "Enjoy Lisbon!")]


def test_a_list_of_messages_is_one_conversation_named_after_the_file(tmp_path):
    [conv] = langchain(tmp_path / "session-42.json", HISTORY)
    assert conv.id == "session-42"
    assert [(m.role, m.content) for m in conv.messages] == [
        ("system", "You are helpful."), ("user", "I moved to Lisbon."),
        ("assistant", "Enjoy Lisbon!")]
    assert conv.warnings == ("tool call left out (messages[2])",
                             "tool message left out (messages[3])")


def test_an_object_of_sessions(tmp_path):
    convs = langchain(tmp_path / "histories.json",
                      {"alice-1": HISTORY, "alice-2": [lc("human", "Hello again")]})
    assert [c.id for c in convs] == ["alice-1", "alice-2"]


def test_a_list_of_records_or_of_message_lists(tmp_path):
    convs = langchain(tmp_path / "chats.json", [
        {"session_id": "s1", "messages": HISTORY}, {"id": "s2", "messages": HISTORY},
        {"messages": [lc("human", "no id")]}])
    assert [c.id for c in convs[:2]] == ["s1", "s2"]
    assert convs[2].id.startswith("sha256:")
    lists = langchain(tmp_path / "lists.json", [[lc("human", "one")], [lc("human", "two")]])
    assert [c.messages[0].content for c in lists] == ["one", "two"]
    assert lists[0].id != lists[1].id and all(c.id.startswith("sha256:") for c in lists)


def test_chat_messages_chunks_and_content_parts(tmp_path):
    [conv] = langchain(tmp_path / "c.json", [
        lc("chat", "Note to self", role="user"),
        lc("AIMessageChunk", "Streamed answer"),
        lc("human", [{"type": "text", "text": "What is this?"},
                     {"type": "image_url", "image_url": {"url": "data:..."}}]),
    ])
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "Note to self"), ("assistant", "Streamed answer"), ("user", "What is this?")]
    assert conv.warnings == ("image_url part left out (messages[2])",)


def test_langchain_bad_records_fail_alone(tmp_path):
    first, second, third = langchain(tmp_path / "c.json", [
        {"id": "bad", "messages": "hi"}, [lc("robot", "beep")], {"id": "ok", "messages": HISTORY}])
    assert isinstance(first, Invalid) and first.conversation_id == "bad"
    assert "c.json: record 0: expected a list of LangChain messages, got str" in first.reason
    assert isinstance(second, Invalid)
    assert "messages[0]: role 'robot' is not one of" in second.reason
    assert third.id == "ok"


def test_langchain_needs_an_entity_id_and_a_langchain_file(tmp_path):
    path = write(tmp_path / "c.json", HISTORY)
    with pytest.raises(InvalidInputError, match="LangChain message files carry no user id"):
        read_langchain(path, entity_id=None)
    with pytest.raises(InvalidInputError, match="not a LangChain message file: it is an "
                                                "object with keys a"):
        read_langchain(write(tmp_path / "x.json", {"a": 1}), entity_id="me")


# --- through read_source and the engine ------------------------------------------------------

def test_both_formats_seed_through_read_source(tmp_path):
    sg = write(tmp_path / "sg.json", [{"id": "s1", "conversations": [
        turn("human", "I have a cat named Miso."), turn("gpt", "Nice!")]}])
    chat = write(tmp_path / "session-1.json", HISTORY)
    m = Memori(conn=":memory:", backend="local")
    for path, conversation_id in ((sg, "s1"), (chat, "session-1")):
        result = asyncio.run(m.seed(read_source(path, entity_id="me")))
        assert result.total == 1 and result.successful == 1
        assert result.results[0].conversation_id == conversation_id
