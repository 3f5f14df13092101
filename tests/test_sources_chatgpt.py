"""ChatGPT data exports: the current branch only, what is left out, files, zips, problems."""

from __future__ import annotations

import asyncio
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memori_nb import Conversation, InvalidInputError, Memori
from memori_nb.sources import read_chatgpt_export, read_source
from memori_nb.sources.chatgpt import parse_chatgpt_conversation
from memori_nb.validation import Invalid, check_conversations, count_warnings

REAL_EXPORT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "exports" / "chatgpt"
               / "conversations.json")
T0 = 1_700_000_000.0


def node(node_id, parent, children, role=None, parts=None, *, content_type="text",
         create_time=None, hidden=False, recipient="all", content=None):
    """One mapping node; role None makes a node without a message (like the root)."""
    if role is None:
        message = None
    else:
        message = {"id": node_id, "author": {"role": role, "name": None, "metadata": {}},
                   "create_time": create_time, "update_time": None,
                   "content": content or {"content_type": content_type, "parts": parts},
                   "status": "finished_successfully", "end_turn": None, "weight": 1.0,
                   "metadata": ({"is_visually_hidden_from_conversation": True} if hidden
                                else {}),
                   "recipient": recipient}
    return node_id, {"id": node_id, "message": message, "parent": parent,
                     "children": children}


def conversation(cid, nodes, current, title="A chat"):
    return {"title": title, "create_time": T0, "update_time": T0 + 100,
            "mapping": dict(nodes), "moderation_results": [], "current_node": current,
            "conversation_id": cid, "id": cid}


def branched():
    """An edited user message and a regenerated answer: three branches in one tree."""
    return conversation("branchy", [
        node("root", None, ["sys"]),
        node("sys", "root", ["u1"], "system", [""], hidden=True),
        node("u1", "sys", ["a1-old", "a1-new"], "user", ["What is 2+2?"], create_time=T0 + 1),
        node("a1-old", "u1", [], "assistant", ["Five."], create_time=T0 + 2),
        node("a1-new", "u1", ["u2-old", "u2-new"], "assistant", ["Four."],
             create_time=T0 + 3),
        node("u2-old", "a1-new", ["a2-old"], "user", ["And 3+3?"], create_time=T0 + 4),
        node("a2-old", "u2-old", [], "assistant", ["Six."], create_time=T0 + 5),
        node("u2-new", "a1-new", ["a2-new"], "user", ["And 4+4?"], create_time=T0 + 6),
        node("a2-new", "u2-new", [], "assistant", ["Eight."], create_time=T0 + 7),
    ], current="a2-new")


def with_tools():
    return conversation("tools", [
        node("root", None, ["sys"]),
        node("sys", "root", ["ctx"], "system", [""], hidden=True),
        node("ctx", "sys", ["u1"], "user", None, hidden=True,
             content={"content_type": "user_editable_context", "user_profile": "x",
                      "user_instructions": "y"}),
        node("u1", "ctx", ["code"], "user", ["Plot y = x² for me 📈"], create_time=T0 + 1),
        node("code", "u1", ["out"], "assistant", None, content_type="code",
             recipient="python", create_time=T0 + 2,
             content={"content_type": "code", "language": "python", "text": "plot()"}),
        node("out", "code", ["browse"], "tool", None, create_time=T0 + 3,
             content={"content_type": "execution_output", "text": "<<ImageDisplayed>>"}),
        node("browse", "out", ["call"], "assistant", None, create_time=T0 + 4,
             content={"content_type": "tether_browsing_display", "result": "", "summary": ""}),
        node("call", "browse", ["empty"], "assistant", ['{"query": "x squared"}'],
             recipient="browser", create_time=T0 + 5),
        node("empty", "call", ["a1"], "assistant", ["   "], create_time=T0 + 6),
        node("a1", "empty", ["u2"], "assistant", ["Here is the plot of y = x² — a parabola."],
             create_time=T0 + 7),
        node("u2", "a1", [], "user", [{"content_type": "image_asset_pointer",
                                       "asset_pointer": "file-service://abc"},
                                      "What about this one?"],
             content_type="multimodal_text", create_time=T0 + 8),
    ], current="u2", title="Plotting ✨")


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def read_all(path, entity_id="me", **options):
    """The export's conversations as the engine sees them: raw records, validated."""
    seed = read_chatgpt_export(path, entity_id=entity_id, **options)
    assert seed.entity_id == "me" and seed.size is None  # streamed
    return [parsed for _, parsed in check_conversations(seed)]


def test_only_the_current_branch_is_read(tmp_path):
    [conv] = read_all(write_json(tmp_path / "conversations.json", [branched()]))
    assert isinstance(conv, Conversation)
    assert conv.id == "branchy" and conv.title == "A chat"
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "What is 2+2?"), ("assistant", "Four."),
        ("user", "And 4+4?"), ("assistant", "Eight.")]
    assert conv.warnings == ("hidden system message left out (node sys)",)


def test_records_become_raw_conversations_with_locations():
    raw = parse_chatgpt_conversation(branched(), 0, where="conversations.json: record 0")
    assert raw["id"] == "branchy" and raw["title"] == "A chat"
    assert raw["where"] == "conversations.json: record 0"
    assert [m["where"] for m in raw["messages"]] == ["node u1", "node a1-new", "node u2-new",
                                                     "node a2-new"]
    assert raw["messages"][0] == {"role": "user", "content": "What is 2+2?",
                                  "timestamp": T0 + 1, "where": "node u1"}
    assert raw["warnings"] == ["hidden system message left out (node sys)"]


def test_other_author_roles_are_judged_by_validation_and_role_map(tmp_path):
    record = conversation("c", [node("root", None, ["u"]),
                                node("u", "root", ["x"], "user", ["hi"]),
                                node("x", "u", [], "critic", ["meh"])], current="x")
    path = write_json(tmp_path / "conversations.json", [record])
    [failed] = read_all(path)
    assert isinstance(failed, Invalid) and "node x: role 'critic' is not one of" in failed.reason
    [conv] = read_all(path, role_map={"critic": None})
    assert [m.content for m in conv.messages] == ["hi"]
    assert conv.warnings == ("critic message left out (node x)",)


def test_ids_and_titles_are_cleaned_by_validation(tmp_path):
    record = branched()
    record["id"], record["title"] = " spaced ", "bad \ud800 title"
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([record]))  # the lone surrogate as a \ud800 escape
    [conv] = read_all(path)
    assert conv.id == "spaced" and conv.title == "bad \ufffd title"
    assert "id whitespace trimmed (' spaced ')" in conv.warnings


def test_create_time_is_kept_as_utc_datetimes_in_order(tmp_path):
    [conv] = read_all(write_json(tmp_path / "conversations.json", [branched()]))
    times = [m.timestamp for m in conv.messages]
    assert times[0] == datetime.fromtimestamp(T0 + 1, tz=timezone.utc)
    assert all(t.tzinfo is not None for t in times)
    assert times == sorted(times)


def test_hidden_tool_code_and_empty_messages_are_left_out_and_counted(tmp_path):
    [conv] = read_all(write_json(tmp_path / "conversations.json", [with_tools()]))
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "Plot y = x² for me 📈"),
        ("assistant", "Here is the plot of y = x² — a parabola."),
        ("user", "What about this one?")]
    assert conv.title == "Plotting ✨"
    assert conv.warnings == (
        "hidden system message left out (2: node sys, node ctx)",
        "code message left out (node code)", "tool message left out (node out)",
        "tether_browsing_display message left out (node browse)",
        "tool call left out (node call)", "image_asset_pointer part left out (node u2)",
        "empty message left out (node empty)")


def test_missing_create_time_gives_no_timestamp(tmp_path):
    record = conversation("c", [node("root", None, ["u"]),
                                node("u", "root", [], "user", ["hello"])], current="u")
    [conv] = read_all(write_json(tmp_path / "conversations.json", [record]))
    assert conv.messages[0].timestamp is None


def test_a_conversation_with_no_text_left_is_invalid_and_says_why(tmp_path):
    record = conversation("silent", [
        node("root", None, ["sys"]),
        node("sys", "root", ["t"], "system", [""], hidden=True),
        node("t", "sys", [], "tool", ["output"])], current="t")
    [item] = read_all(write_json(tmp_path / "conversations.json", [record]))
    assert isinstance(item, Invalid) and item.conversation_id == "silent"
    assert item.reason.startswith("conversation 'silent': conversations.json: record 0: "
                                  "nothing left to send: ")
    assert "hidden system message left out" in item.reason
    assert "tool message left out" in item.reason


@pytest.mark.parametrize("breakage, problem", [
    (lambda r: r.pop("mapping"), "missing 'mapping'"),
    (lambda r: r.update(current_node="nowhere"), "current_node 'nowhere' is not in 'mapping'"),
    (lambda r: r["mapping"]["u1"].update(parent="a2-new"), "form a cycle"),
    (lambda r: r["mapping"]["u1"].update(parent="gone"),
     "node 'u1' has parent 'gone', which is not in 'mapping'"),
])
def test_a_malformed_record_is_invalid_and_the_rest_goes_on(tmp_path, breakage, problem):
    broken = branched()
    broken["id"] = broken["conversation_id"] = "broken"
    breakage(broken)
    path = write_json(tmp_path / "conversations.json", [broken, with_tools()])
    first, second = read_all(path)
    assert isinstance(first, Invalid) and first.conversation_id == "broken"
    assert problem in first.reason and first.reason.startswith("conversation 'broken'")
    assert isinstance(second, Conversation) and second.id == "tools"


def test_a_record_without_an_id_or_not_an_object_is_named_by_position(tmp_path):
    no_id = branched()
    del no_id["id"], no_id["conversation_id"]
    items = read_all(write_json(tmp_path / "conversations.json", [no_id, "junk", branched()]))
    assert [i.conversation_id for i in items[:2]] == ["#0", "#1"]
    assert items[2].id == "branchy"
    assert "record 0: missing 'id' (or 'conversation_id')" in items[0].reason
    assert "expected a conversation object, got str" in items[1].reason


def test_conversation_id_is_used_when_there_is_no_id(tmp_path):
    record = branched()
    del record["id"]
    [conv] = read_all(write_json(tmp_path / "conversations.json", [record]))
    assert conv.id == "branchy"


def test_the_export_zip_is_read_without_extracting(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("chat.html", "<html></html>")
        zf.writestr("user.json", json.dumps({"id": "user-abc"}))
        zf.writestr("conversations.json", json.dumps([branched(), with_tools()]))
    items = read_all(archive)
    assert [c.id for c in items] == ["branchy", "tools"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip"]


def test_split_files_in_a_folder_are_read_in_name_order(tmp_path):
    write_json(tmp_path / "conversations-001.json", [with_tools()])
    write_json(tmp_path / "conversations-000.json", [branched()])
    (tmp_path / "user.json").write_text("{}")
    assert [c.id for c in read_all(tmp_path)] == ["branchy", "tools"]


def test_split_files_in_a_zip(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("conversations-001.json", json.dumps([with_tools()]))
        zf.writestr("conversations-000.json", json.dumps([branched()]))
    assert [c.id for c in read_all(archive)] == ["branchy", "tools"]


def test_a_bad_split_file_names_itself_in_problems(tmp_path):
    bad = branched()
    bad.pop("mapping")
    write_json(tmp_path / "conversations-000.json", [branched()])
    write_json(tmp_path / "conversations-001.json", [bad])
    items = read_all(tmp_path)
    assert "conversations-001.json" in items[1].reason


def test_a_claude_export_is_not_a_chatgpt_export(tmp_path):
    path = write_json(tmp_path / "conversations.json",
                      [{"uuid": "x", "name": "", "chat_messages": []}])
    with pytest.raises(InvalidInputError, match="not a ChatGPT export: it looks like a "
                                                "Claude export"):
        read_chatgpt_export(path, entity_id="me")


def test_a_seed_file_is_not_a_chatgpt_export(tmp_path):
    path = write_json(tmp_path / "seed.json", {"entity_id": "u", "conversations": []})
    with pytest.raises(InvalidInputError, match=r"seed\.json: not a ChatGPT export"):
        read_chatgpt_export(path, entity_id="me")


def test_invalid_json_and_missing_files_are_one_clear_error(tmp_path):
    bad = tmp_path / "conversations.json"
    bad.write_text("[{")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        read_chatgpt_export(bad, entity_id="me")
    with pytest.raises(InvalidInputError, match="no such file"):
        read_chatgpt_export(tmp_path / "nope.json", entity_id="me")
    folder = tmp_path / "empty-folder"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match="no conversations"):
        read_chatgpt_export(folder, entity_id="me")


def test_an_entity_id_is_required(tmp_path):
    path = write_json(tmp_path / "conversations.json", [branched()])
    with pytest.raises(InvalidInputError, match="--entity-id"):
        read_chatgpt_export(path, entity_id=None)


def test_an_empty_export_has_no_conversations(tmp_path):
    assert read_all(write_json(tmp_path / "conversations.json", [])) == []


def test_seeding_an_export_keeps_the_warnings(tmp_path):
    path = write_json(tmp_path / "conversations.json", [with_tools(), branched()])
    m = Memori(conn=":memory:", backend="local")
    result = asyncio.run(m.seed(read_source(path, entity_id="me")))
    assert result.successful == 2
    assert result.results[0].warnings[0] == "hidden system message left out (2: node sys, " \
                                            "node ctx)"


# --- the genuine export beside the project ------------------------------------------------

@pytest.fixture
def real_export():
    if not REAL_EXPORT.exists():
        pytest.skip(f"{REAL_EXPORT} is not here")
    return REAL_EXPORT


def test_real_export_keeps_the_visible_conversation(real_export):
    [conv] = read_all(real_export)
    assert conv.id == "966da5c4-5bb7-4e4d-ab6d-a7316b96266e"
    assert conv.title == "Average Distance in U(0,1)"
    assert len(conv.messages) == 20
    assert [m.role for m in conv.messages].count("user") == 8
    assert conv.messages[0].role == "user"
    assert conv.messages[0].content.startswith("given two random independent variables x,y "
                                               "in U(0,1), what is the average distance")
    assert conv.messages[1].content.startswith("To find the average distance")
    assert count_warnings(conv.warnings) == {"code message left out": 11,
                                             "tool message left out": 11,
                                             "hidden system message left out": 2}


def test_real_export_has_increasing_timestamps_and_no_code(real_export):
    [conv] = read_all(real_export)
    times = [m.timestamp for m in conv.messages]
    assert all(t is not None and t.tzinfo is not None for t in times)
    assert times == sorted(times)
    assert times[0].date().isoformat() == "2023-09-21"
    assert not any("import numpy" in m.content for m in conv.messages)
    assert not any(m.content == "<<ImageDisplayed>>" for m in conv.messages)


def test_real_export_is_detected_and_seeds(real_export):
    m = Memori(conn=":memory:", backend="local")
    result = asyncio.run(m.seed(read_source(real_export, entity_id="me")))
    assert result.total == 1 and result.successful == 1


# --- bounded input --------------------------------------------------------------------------


def bomb(archive: Path, megabytes: int) -> None:
    """A valid export that expands about 1000-fold: a conversation padded with spaces."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("conversations.json",
                    json.dumps([branched()])[:-1] + " " * (megabytes << 20) + "]")


def test_a_zip_bomb_member_is_refused_before_it_is_read(tmp_path):
    import tracemalloc

    archive = tmp_path / "export.zip"
    bomb(archive, 80)
    assert archive.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError) as caught:
            read_source(archive, entity_id="me")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith(f"{archive}!conversations.json: expands to ")
    assert "over 200 times its compressed " in message
    assert "zip bomb" in message and "\n" not in message
    assert peak < 8 << 20  # nothing of the member was decompressed into memory


def test_a_member_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    from memori_nb.sources import _exports

    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("conversations.json", json.dumps([branched(), with_tools()]))
    assert [c.id for c in read_all(archive)] == ["branchy", "tools"]
    monkeypatch.setattr(_exports, "MAX_MEMBER_BYTES", 1000)
    with pytest.raises(InvalidInputError, match=r"conversations\.json: expands to [\d,]+ bytes, "
                                                r"over the 1,000 bytes a zip member may hold"):
        read_all(archive)


def test_a_member_whose_header_understates_its_size_is_never_read_past_it(tmp_path):
    archive = tmp_path / "export.zip"
    bomb(archive, 80)
    data = bytearray(archive.read_bytes())
    # Uncompressed size: at offset 22 of the local header, 24 of the central directory entry.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature) + offset
        data[at:at + 4] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match=r"export\.zip!conversations\.json: cannot read "
                                                r"the zip member \(Bad CRC-32"):
        read_chatgpt_export(archive, entity_id="me")


@pytest.mark.parametrize("zipped", [False, True], ids=["file", "zip"])
def test_an_export_nested_too_deeply_is_one_clear_error(tmp_path, zipped):
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "conversations.json"
    if zipped:
        path = tmp_path / "export.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("conversations.json", deep)
    else:
        path.write_text(deep)
    with pytest.raises(InvalidInputError) as caught:
        read_chatgpt_export(path, entity_id="me")
    name = f"{path}!conversations.json" if zipped else str(path)
    assert str(caught.value) == f"{name}: JSON nested too deeply to read"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
