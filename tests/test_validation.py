"""Validation: every bad conversation is named (id or #index) with the field that is wrong."""

import pytest

from memori_nb.errors import ConfigurationError, InvalidInputError
from memori_nb.models import Conversation, Message, SeedConfig, SeedData
from memori_nb.validation import Invalid, check_conversations, parse_conversation


def ok(*contents: str, role: str = "user") -> list[dict]:
    return [{"role": role, "content": content} for content in contents]


def test_a_well_formed_conversation_parses():
    parsed = parse_conversation({"id": "c1", "title": "Hi", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello", "timestamp": "2024-01-01T00:00:00Z"},
        {"role": "assistant", "content": "Hi!"}]}, 0)
    assert isinstance(parsed, Conversation)
    assert parsed.id == "c1" and parsed.title == "Hi"
    assert [(m.role, m.content) for m in parsed.messages] == [
        ("system", "Be brief."), ("user", "Hello"), ("assistant", "Hi!")]
    assert parsed.messages[1].timestamp.isoformat() == "2024-01-01T00:00:00+00:00"


@pytest.mark.parametrize(("raw", "label", "field"), [
    ({"messages": ok("hi")}, "#4", "'id'"),
    ({"id": True, "messages": ok("hi")}, "#4", "'id'"),
    ({"id": "", "messages": ok("hi")}, "#4", "'id'"),
    ({"id": "   ", "messages": ok("hi")}, "#4", "'id'"),
    ({"id": "c1"}, "c1", "'messages'"),
    ({"id": "c1", "messages": "hello"}, "c1", "'messages'"),
    ({"id": "c1", "messages": {"role": "user"}}, "c1", "'messages'"),
    ({"id": "c1", "messages": []}, "c1", "messages is empty"),
    ({"id": "c1", "messages": [{"role": "robot", "content": "hi"}]}, "c1",
     "messages[0]: role 'robot'"),
    ({"id": "c1", "messages": [{"content": "hi"}]}, "c1", "messages[0]: role is missing"),
    ({"id": "c1", "messages": ok("fine") + [{"role": "user", "content": 42}]}, "c1",
     "messages[1]: content must be text"),
    ({"id": "c1", "messages": [{"role": "user"}]}, "c1", "nothing left to send"),
    ({"id": "c1", "messages": ok("")}, "c1", "nothing left to send"),
    ({"id": "c1", "messages": ok(" \n\t ")}, "c1", "nothing left to send"),
    ({"id": "c1", "messages": ["hello"]}, "c1", "messages[0]"),
    (["not", "a", "dict"], "#4", "'id' and 'messages'"),
    ("conversation", "#4", "'id' and 'messages'"),
    (None, "#4", "'id' and 'messages'"),
])
def test_a_bad_conversation_is_named_with_its_field(raw, label, field):
    parsed = parse_conversation(raw, 4)
    assert isinstance(parsed, Invalid)
    assert parsed.conversation_id == label
    assert parsed.index == 4
    assert parsed.reason.startswith(f"conversation {label!r}: ")
    assert field in parsed.reason


def test_unknown_role_lists_the_allowed_roles_and_how_to_map_it():
    reason = parse_conversation({"id": "c1", "messages": ok("hi", role="robot")}, 0).reason
    assert "'robot'" in reason and "role_map={'robot': 'user'}" in reason
    assert all(role in reason for role in ("user", "assistant", "system"))


@pytest.mark.parametrize(("role", "expected"), [
    ("User", "user"), (" HUMAN ", "user"), ("ai", "assistant"), ("gpt", "assistant"),
    ("bot", "assistant"), ("model", "assistant"), ("Assistant", "assistant"),
    ("developer", "system")])
def test_roles_are_matched_without_case_and_common_aliases_mapped(role, expected):
    parsed = parse_conversation({"id": "c1", "messages": ok("hi", role=role)}, 0)
    assert [m.role for m in parsed.messages] == [expected]


def test_tool_messages_and_empty_messages_are_left_out_with_warnings():
    parsed = parse_conversation({"id": "c1", "messages": [
        {"role": "user", "content": "I live in Oslo."}, {"role": "tool", "content": "{}"},
        {"role": "function", "content": "{}"}, {"role": "assistant", "content": "  "},
        {"role": "assistant", "content": None}, {"role": "assistant", "content": "Nice!"}]}, 0)
    assert [m.content for m in parsed.messages] == ["I live in Oslo.", "Nice!"]
    assert parsed.warnings == ("tool message left out (messages[1])",
                               "function message left out (messages[2])",
                               "empty message left out (2: messages[3], messages[4])")


def test_role_map_adds_names_and_can_leave_messages_out():
    from memori_nb.validation import ReadOptions

    options = ReadOptions(role_map={"Agent": "assistant", "note": None})
    parsed = parse_conversation({"id": "c1", "messages": ok("hi", role="agent")
                                 + ok("internal", role="NOTE")}, 0, options)
    assert [m.role for m in parsed.messages] == ["assistant"]
    with pytest.raises(ConfigurationError, match="role_map maps 'x' to 'boss'"):
        ReadOptions(role_map={"x": "boss"})


def test_an_unreadable_timestamp_is_a_warning_and_the_time_is_left_empty():
    parsed = parse_conversation({"id": "c1", "messages": [
        {"role": "user", "content": "hi", "timestamp": "yesterday-ish"}]}, 0)
    assert parsed.messages[0].timestamp is None
    assert parsed.warnings == ("unreadable timestamp left empty (messages[0]: "
                               "'yesterday-ish')",)


def test_ids_lose_surrounding_whitespace_and_say_so():
    parsed = parse_conversation({"id": " c7 ", "messages": ok("hi")}, 0)
    assert parsed.id == "c7" and parsed.warnings == ("id whitespace trimmed (' c7 ')",)
    data = SeedData.for_conversations(entity_id=" Jason ", conversations=[])
    assert data.entity_id == "Jason"
    assert data.warnings == ("entity id whitespace trimmed (' Jason ')",)


def test_text_that_cannot_be_stored_is_made_safe_with_a_warning():
    parsed = parse_conversation({"id": "c\ud800", "title": "t\x00", "messages": [
        {"role": "user", "content": "I live in Oslo \udc80 now.\x00"}]}, 0)
    assert parsed.id == "c\ufffd" and parsed.title == "t\ufffd"
    assert parsed.messages[0].content == "I live in Oslo \ufffd now.\ufffd"
    parsed.messages[0].content.encode("utf-8")  # storable now
    assert {w.split(" (")[0] for w in parsed.warnings} == {"unstorable characters replaced"}


@pytest.mark.parametrize("bad", ["\udc80", "\ud83d\ude00", "\x00"])
def test_an_unstorable_character_in_non_ascii_text_is_found(bad):
    # Most real messages are not pure ASCII; the check there is not the ASCII one.
    parsed = parse_conversation({"id": "c1", "messages": [
        {"role": "user", "content": f"Café in Oslo {bad} – ok"}]}, 0)
    replaced = "\ufffd" * len(bad)
    assert parsed.messages[0].content == f"Café in Oslo {replaced} – ok"
    assert parsed.warnings[0].startswith("unstorable characters replaced")


def test_non_string_content_names_its_type():
    reason = parse_conversation({"id": "c1", "messages": [{"role": "user", "content": 3}]},
                                0).reason
    assert "must be text" in reason and "int" in reason


def test_content_parts_are_joined():
    parsed = parse_conversation({"id": "c1", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hello"}, {"type": "image_url", "image_url": {}},
        "there"]}]}, 0)
    assert parsed.messages[0].content == "Hello\nthere"


def test_sharegpt_and_langchain_shapes_are_read():
    parsed = parse_conversation({"id": "s1", "conversations": [
        {"from": "human", "value": "I have a dog."}, {"from": "gpt", "value": "Nice."},
        {"type": "human", "data": {"content": "His name is Rex."}}]}, 0)
    assert [(m.role, m.content) for m in parsed.messages] == [
        ("user", "I have a dog."), ("assistant", "Nice."), ("user", "His name is Rex.")]


def test_up_to_three_problems_are_listed_then_the_rest_counted():
    messages = [{"role": "robot", "content": "x"}] * 5 + ok("fine") + ok("")
    reason = parse_conversation({"id": "c1", "messages": messages}, 0).reason
    assert "messages[0]" in reason and "messages[1]" in reason and "messages[2]" in reason
    assert "messages[3]" not in reason and "messages[6]" not in reason
    assert reason.endswith("; and 2 more")


def test_exactly_three_problems_have_no_and_more():
    reason = parse_conversation({"id": "c1", "messages": ok("a", role="robot") * 3}, 0).reason
    assert reason.count("role 'robot'") == 3
    assert "more" not in reason


def seed(conversations) -> SeedData:
    return SeedData.for_conversations(entity_id="u1", conversations=conversations)


def test_duplicate_ids_in_a_list_invalidate_every_use_and_list_all_positions():
    conversations = [{"id": "a", "messages": ok("1")}, {"id": "b", "messages": ok("2")},
                     {"id": "a", "messages": ok("3")}, {"id": "a", "messages": ok("4")}]
    checked = list(check_conversations(seed(conversations)))
    assert [index for index, _ in checked] == [0, 1, 2, 3]
    assert isinstance(checked[1][1], Conversation)
    for position in (0, 2, 3):
        invalid = checked[position][1]
        assert isinstance(invalid, Invalid)
        assert invalid.conversation_id == "a" and invalid.index == position
        assert "duplicate id" in invalid.reason
        assert "positions 0, 2, 3" in invalid.reason


def test_ids_that_differ_only_by_surrounding_space_are_duplicates_whatever_the_shape():
    parsed = Conversation(id="b", messages=(Message(role="user", content="hi"),))
    conversations = [{"id": " a", "messages": ok("1")}, {"id": "b", "messages": ok("2")},
                     {"id": "a ", "messages": ok("3")}, {"id": "", "messages": ok("4")},
                     {"id": "", "messages": ok("5")}, parsed, {"id": "c", "messages": ok("6")}]
    checked = [parsed for _, parsed in check_conversations(seed(conversations))]
    assert [type(c).__name__ for c in checked] == [
        "Invalid", "Invalid", "Invalid", "Invalid", "Invalid", "Invalid", "Conversation"]
    assert "positions 0, 2" in checked[0].reason and "positions 1, 5" in checked[1].reason
    assert "duplicate" not in checked[3].reason  # no id at all: its own reason


def test_whole_number_ids_are_their_decimal_text_and_other_values_fail_naming_them():
    conversations = [{"id": 7, "messages": ok("1")}, {"id": 8.0, "messages": ok("2")},
                     {"id": "7", "messages": ok("3")}, {"id": True, "messages": ok("4")},
                     {"id": 2.5, "messages": ok("5")}]
    checked = [parsed for _, parsed in check_conversations(seed(conversations))]
    assert isinstance(checked[1], Conversation) and checked[1].id == "8"
    duplicate = ("conversation '7': duplicate id, used by 2 conversations (positions 0, 2); "
                 "ids must be unique per entity")  # 7 and "7" are one id
    assert [checked[0].reason, checked[2].reason] == [duplicate, duplicate]
    assert checked[3].reason == ("conversation '#3': 'id' must be a non-empty string or an "
                                 "integer, got True")
    assert checked[4].reason == ("conversation '#4': 'id' must be a non-empty string or an "
                                 "integer, got 2.5")


def test_messages_read_fast_equal_those_built_by_hand():
    (conversation,) = [c for _, c in check_conversations(seed(
        [{"id": "a", "messages": [{"role": "user", "content": "I live in Porto.",
                                   "timestamp": "2024-01-02T03:04:05Z"}]}]))]
    message = conversation.messages[0]
    assert message == Message(role="user", content="I live in Porto.",
                              timestamp=message.timestamp)
    assert hash(message) == hash(Message(role="user", content="I live in Porto.",
                                         timestamp=message.timestamp))
    assert message.timestamp.isoformat() == "2024-01-02T03:04:05+00:00"
    with pytest.raises(AttributeError):
        message.role = "assistant"  # still frozen


def test_duplicate_ids_in_a_stream_invalidate_later_uses_naming_the_first():
    def stream():
        yield {"id": "a", "messages": ok("1")}
        yield {"id": "b", "messages": ok("2")}
        yield {"id": "a", "messages": ok("3")}

    data = seed(stream())
    assert data.size is None
    checked = [parsed for _, parsed in check_conversations(data)]
    assert isinstance(checked[0], Conversation) and isinstance(checked[1], Conversation)
    assert isinstance(checked[2], Invalid)
    assert checked[2].conversation_id == "a" and checked[2].index == 2
    assert "duplicate id" in checked[2].reason
    assert "first used at position 0" in checked[2].reason


def test_one_bad_conversation_does_not_spoil_the_others():
    checked = [parsed for _, parsed in check_conversations(seed(
        [{"id": "a", "messages": ok("x")}, {"messages": ok("y")}, {"id": "c", "messages": ok("z")}]))]
    assert [type(p).__name__ for p in checked] == ["Conversation", "Invalid", "Conversation"]
    assert checked[1].conversation_id == "#1"


@pytest.mark.parametrize("entity_id", [None, 5, "", "  "])
def test_for_conversations_rejects_a_bad_entity_id(entity_id):
    with pytest.raises(InvalidInputError, match="entity_id"):
        SeedData.for_conversations(entity_id=entity_id, conversations=[])


@pytest.mark.parametrize("conversations", [
    {"id": "c1", "messages": []}, "conversations", b"bytes", 42])
def test_for_conversations_rejects_a_non_list(conversations):
    with pytest.raises(InvalidInputError, match="must be a list") as caught:
        SeedData.for_conversations(entity_id="u1", conversations=conversations)
    assert "u1" in str(caught.value)


def test_for_conversations_keeps_a_list_and_its_size():
    data = SeedData.for_conversations(entity_id="u1", process_id="agent",
                                      conversations=[{"id": "c1"}, {"id": "c2"}])
    assert data.size == 2 and data.process_id == "agent"


@pytest.mark.parametrize("field", ["max_messages_per_request", "max_chars_per_request",
                                   "batch_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_seed_config_rejects_non_positive_limits(field, value):
    with pytest.raises(ConfigurationError, match=field):
        SeedConfig(**{field: value})


@pytest.mark.parametrize("kwargs", [
    {"max_retries": -1}, {"max_retries": True}, {"retry_delay": -0.5},
    {"retry_delay": float("nan")}, {"retry_delay": float("inf")}, {"retry_delay": "1"},
    {"request_timeout": -1}, {"request_timeout": 0}, {"request_timeout": float("nan")},
    {"request_timeout": float("inf")}])
def test_seed_config_rejects_retry_settings_a_run_cannot_use(kwargs):
    # NaN or inf would make a run wait forever; a timeout of 0 would fail every request.
    [(name, value)] = kwargs.items()
    with pytest.raises(ConfigurationError, match=f"SeedConfig.{name} must be") as caught:
        SeedConfig(**kwargs)
    assert repr(value) in str(caught.value)


def test_seed_config_allows_retrying_at_once():
    assert SeedConfig(retry_delay=0).retry_delay == 0


def conv(*pairs: tuple[str, str], cid: str = "c1", title: str | None = None,
         timestamp=None) -> Conversation:
    return Conversation(id=cid, title=title, messages=tuple(
        Message(role=role, content=content, timestamp=timestamp) for role, content in pairs))


BASE = (("user", "I live in Lisbon."), ("assistant", "Nice!"))


def test_content_hash_is_stable_for_the_same_roles_and_contents():
    assert conv(*BASE).content_hash() == conv(*BASE).content_hash()
    # The ledger's "same content" ignores the id, the title and timestamps.
    assert conv(*BASE).content_hash() == conv(*BASE, cid="other", title="T",
                                              timestamp="2024-01-01").content_hash()
    assert len(conv(*BASE).content_hash()) == 64


@pytest.mark.parametrize("changed", [
    (("user", "I live in Porto."), ("assistant", "Nice!")),
    (("system", "I live in Lisbon."), ("assistant", "Nice!")),
    (("assistant", "Nice!"), ("user", "I live in Lisbon.")),
    (("user", "I live in Lisbon."),),
    (("user", "I live in Lisbon."), ("assistant", "Nice!"), ("user", "Yes")),
    (("user", "I live in Lisbon.Nice!"),),
])
def test_content_hash_changes_with_content_role_or_order(changed):
    assert conv(*changed).content_hash() != conv(*BASE).content_hash()


def test_content_hash_separators_cannot_be_forged_by_content():
    one = conv(("user", "a\x01user\x00b"))
    two = conv(("user", "a"), ("user", "b"))
    assert one.content_hash() != two.content_hash()
