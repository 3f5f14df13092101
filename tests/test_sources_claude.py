"""Claude.ai data exports: text blocks only, roles, order, what is left out, problems."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memori_nb import Conversation, InvalidInputError
from memori_nb.sources import read_claude_export
from memori_nb.validation import Invalid, check_conversations


def message(sender, created_at, *blocks, text=None, **extra):
    """A chat message; ``blocks`` are (type, payload) pairs."""
    content = []
    for kind, payload in blocks:
        block = {"type": kind, "start_timestamp": created_at, "stop_timestamp": created_at}
        if kind == "text":
            block.update(text=payload, citations=[])
        elif kind == "thinking":
            block.update(thinking=payload, summaries=[], cut_off=False)
        elif kind == "tool_use":
            block.update(name="web_search", input={"query": payload})
        elif kind == "tool_result":
            block.update(name="web_search", content=[{"type": "text", "text": payload}])
        content.append(block)
    if text is None:
        text = "\n".join(p for k, p in blocks)  # real exports' text can include thinking
    return {"uuid": f"m-{created_at}", "text": text, "content": content, "sender": sender,
            "created_at": created_at, "updated_at": created_at, "attachments": [],
            "files": [], **extra}


def conversation(uuid, messages, name="A chat"):
    return {"uuid": uuid, "name": name, "created_at": "2024-05-01T09:59:00.000000Z",
            "updated_at": "2024-05-01T11:00:00.000000Z", "account": {"uuid": "acct-1"},
            "chat_messages": messages}


def write(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def read_all(path, **options):
    """The export's conversations as the engine sees them: raw records, validated."""
    seed = read_claude_export(path, entity_id="me", **options)
    assert seed.entity_id == "me"
    return [parsed for _, parsed in check_conversations(seed)]


def test_text_blocks_only_and_human_is_user(tmp_path):
    record = conversation("c1", [
        message("human", "2024-05-01T10:00:00.000000Z", ("text", "Find me a ramen place 🍜")),
        message("assistant", "2024-05-01T10:00:05.000000Z",
                ("thinking", "The user wants ramen. Let me search."),
                ("tool_use", "ramen near me"), ("tool_result", "Ichiran, 0.4 km"),
                ("text", "Try Ichiran — it is 400 m away.")),
    ])
    [conv] = read_all(write(tmp_path / "conversations.json", [record]))
    assert isinstance(conv, Conversation) and conv.id == "c1" and conv.title == "A chat"
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "Find me a ramen place 🍜"), ("assistant", "Try Ichiran — it is 400 m away.")]
    assert not any("Let me search" in m.content for m in conv.messages)
    assert conv.warnings == ("thinking block left out (chat_messages[1])",
                             "tool_use block left out (chat_messages[1])",
                             "tool_result block left out (chat_messages[1])")


def test_several_text_blocks_are_joined_with_newlines(tmp_path):
    record = conversation("c1", [message("assistant", "2024-05-01T10:00:00Z",
                                         ("text", "First part."), ("tool_use", "q"),
                                         ("text", "Second part."))])
    [conv] = read_all(write(tmp_path / "conversations.json", [record]))
    assert conv.messages[0].content == "First part.\nSecond part."


def test_top_level_text_is_used_only_without_content_blocks(tmp_path):
    old_style = message("human", "2024-05-01T10:00:00Z", text="An older export's message")
    old_style["content"] = []
    no_key = message("assistant", "2024-05-01T10:00:01Z", text="No content key at all")
    del no_key["content"]
    [conv] = read_all(write(tmp_path / "conversations.json",
                            [conversation("c1", [old_style, no_key])]))
    assert [m.content for m in conv.messages] == ["An older export's message",
                                                  "No content key at all"]


def test_messages_are_ordered_by_created_at_stably(tmp_path):
    record = conversation("c1", [
        message("assistant", "2024-05-01T10:00:02Z", ("text", "third")),
        message("human", "2024-05-01T10:00:00Z", ("text", "first")),
        message("assistant", "2024-05-01T12:00:01+02:00", ("text", "second (same time)")),
        message("human", "2024-05-01T10:00:01Z", ("text", "second")),
    ])
    [conv] = read_all(write(tmp_path / "conversations.json", [record]))
    assert [m.content for m in conv.messages] == ["first", "second (same time)", "second",
                                                  "third"]
    assert conv.messages[0].timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)


def test_without_created_at_the_file_order_is_kept_and_said(tmp_path):
    late = message("human", "2024-05-01T10:00:09Z", ("text", "asked first"))
    undated = message("assistant", "x", ("text", "answered second"))
    del undated["created_at"]
    [conv] = read_all(write(tmp_path / "conversations.json", [conversation("c", [late,
                                                                                  undated])]))
    assert [m.content for m in conv.messages] == ["asked first", "answered second"]
    assert conv.messages[1].timestamp is None
    assert "file order kept (1 of 2 messages have no usable created_at)" in conv.warnings


def test_empty_and_malformed_messages_are_left_out_with_warnings(tmp_path):
    record = conversation("c1", [
        message("human", "2024-05-01T10:00:00Z", ("text", "Hi")),
        message("assistant", "2024-05-01T10:00:01Z", ("thinking", "hmm")),
        "not a message",
        message("assistant", "2024-05-01T10:00:03Z", ("text", "Hello")),
    ])
    [conv] = read_all(write(tmp_path / "conversations.json", [record]))
    assert [m.content for m in conv.messages] == ["Hi", "Hello"]
    assert conv.warnings == ("thinking block left out (chat_messages[1])",
                             "malformed message left out (chat_messages[2])",
                             "empty message left out (chat_messages[1])")


def test_attachment_text_is_kept_in_its_message_and_files_without_text_are_named(tmp_path):
    record = conversation("c1", [
        message("human", "2024-05-01T10:00:00Z", ("text", "Summarise the paper"),
                attachments=[{"file_name": "paper.pdf", "file_type": "pdf",
                              "extracted_content": "Abstract: cats sleep a lot."}],
                files=[{"file_name": "paper.pdf"}, {"file_name": "photo.png"}]),
        message("human", "2024-05-01T10:00:01Z", text="",
                attachments=[{"file_name": "notes.txt", "extracted_content": "Buy milk"},
                             {"file_name": "empty.txt", "extracted_content": ""}]),
    ])
    [conv] = read_all(write(tmp_path / "conversations.json", [record]))
    assert [m.content for m in conv.messages] == [
        "Summarise the paper\n\n[attachment paper.pdf]\nAbstract: cats sleep a lot.",
        "[attachment notes.txt]\nBuy milk"]
    assert conv.warnings == ("attachment text kept (2: paper.pdf, notes.txt)",
                             "attachment left out (2: photo.png, empty.txt)")


def test_senders_follow_the_validation_rules_and_role_map(tmp_path):
    record = conversation("c1", [
        message("system", "2024-05-01T10:00:00Z", ("text", "Be brief.")),
        message("Human", "2024-05-01T10:00:01Z", ("text", "Hi")),
        message("narrator", "2024-05-01T10:00:02Z", ("text", "(a pause)")),
    ])
    path = write(tmp_path / "conversations.json", [record])
    [failed] = read_all(path)
    assert isinstance(failed, Invalid)
    assert "chat_messages[2]: role 'narrator' is not one of" in failed.reason
    [conv] = read_all(path, role_map={"narrator": None})
    assert [m.role for m in conv.messages] == ["system", "user"]
    assert conv.warnings == ("narrator message left out (chat_messages[2])",)


def test_unicode_survives(tmp_path):
    text = "Ça va? 你好 — 👩🏽‍💻 naïve café"
    [conv] = read_all(write(tmp_path / "conversations.json", [
        conversation("c1", [message("human", "2024-05-01T10:00:00Z", ("text", text))],
                     name="Ünïcödé 🎉")]))
    assert conv.messages[0].content == text and conv.title == "Ünïcödé 🎉"


@pytest.mark.parametrize("record, label, problem", [
    ({"name": "x", "chat_messages": []}, "#0", "record 0: missing 'uuid'"),
    ({"uuid": "c9", "name": "x"}, "c9", "missing 'chat_messages'"),
    ({"uuid": "c9", "chat_messages": {}}, "c9", "'chat_messages' must be a list"),
    ({"uuid": "c9", "chat_messages": []}, "c9", "messages is empty"),
    ({"uuid": "c9", "chat_messages": [message("assistant", "2024-05-01T10:00:00Z",
                                              ("thinking", "..."))]},
     "c9", "nothing left to send"),
    ({"uuid": "c9", "chat_messages": ["junk"]}, "c9", "nothing left to send"),
    (["a list"], "#0", "expected a conversation object, got list"),
])
def test_unusable_records_are_invalid_and_the_rest_goes_on(tmp_path, record, label, problem):
    good = conversation("ok", [message("human", "2024-05-01T10:00:00Z", ("text", "hi"))])
    first, second = read_all(write(tmp_path / "conversations.json", [record, good]))
    assert isinstance(first, Invalid) and first.conversation_id == label
    assert problem in first.reason
    assert second.id == "ok"


def test_missing_name_gives_no_title(tmp_path):
    record = conversation("c1", [message("human", "2024-05-01T10:00:00Z", ("text", "hi"))])
    del record["name"]
    [conv] = read_all(write(tmp_path / "conversations.json", [record]))
    assert conv.title is None


def test_the_export_zip(tmp_path):
    archive = tmp_path / "data-2024.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("users.json", "[]")
        zf.writestr("projects.json", "[]")
        zf.writestr("conversations.json", json.dumps([conversation("c1", [
            message("human", "2024-05-01T10:00:00Z", ("text", "hi"))])]))
    assert [c.id for c in read_all(archive)] == ["c1"]


def test_a_chatgpt_export_is_not_a_claude_export(tmp_path):
    path = write(tmp_path / "conversations.json",
                 [{"id": "x", "mapping": {}, "current_node": None}])
    with pytest.raises(InvalidInputError, match="not a Claude export: it looks like a "
                                                "ChatGPT export"):
        read_claude_export(path, entity_id="me")


def test_an_entity_id_is_required(tmp_path):
    path = write(tmp_path / "conversations.json", [])
    with pytest.raises(InvalidInputError, match="Claude exports carry no user id"):
        read_claude_export(path, entity_id=None)


def test_a_zip_bomb_export_is_refused_with_the_members_name(tmp_path):
    archive = tmp_path / "data-2024.zip"
    first = json.dumps([conversation("c1", [message("human", "2024-05-01T10:00:00Z",
                                                    ("text", "hi"))])])
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("users.json", "[]")
        zf.writestr("conversations.json", first[:-1] + " " * (80 << 20) + "]")
    with pytest.raises(InvalidInputError, match=r"data-2024\.zip!conversations\.json: expands "
                                                r"to [\d,]+ bytes, over 200 times its "
                                                r"compressed [\d,]+ bytes \(a zip bomb\?\)"):
        read_claude_export(archive, entity_id="me")


def test_an_export_nested_too_deeply_is_one_clear_error(tmp_path):
    path = tmp_path / "conversations.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidInputError) as caught:
        read_claude_export(path, entity_id="me")
    assert str(caught.value) == f"{path}: JSON nested too deeply to read"
