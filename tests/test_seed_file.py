"""The seed JSON file: one entity or a list of them; every problem is one line naming the file."""

import json
from datetime import datetime, timezone
from importlib.resources import files

import pytest

from memori_nb.errors import InvalidInputError
from memori_nb.models import SeedData
from memori_nb.sources.seed_file import load_seed_file
from memori_nb.timestamps import AmbiguousTimestampsError
from memori_nb.validation import Invalid, check_conversations, parse_conversation

CONVERSATION = {"id": "c1", "messages": [{"role": "user", "content": "I live in Lisbon."}]}


def write(tmp_path, document, name="seed.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_a_single_entity_object(tmp_path):
    path = write(tmp_path, {"entity_id": "u1", "process_id": "agent",
                            "conversations": [CONVERSATION]})
    [seed] = load_seed_file(path)
    assert isinstance(seed, SeedData)
    assert (seed.entity_id, seed.process_id, seed.size) == ("u1", "agent", 1)
    [(_, conversation)] = check_conversations(seed)
    assert conversation.messages[0].content == "I live in Lisbon."


def test_a_list_of_entities(tmp_path):
    path = write(tmp_path, [{"entity_id": "u1", "conversations": [CONVERSATION]},
                            {"entity_id": "u2", "conversations": []}])
    seeds = load_seed_file(str(path))
    assert [(s.entity_id, s.process_id, s.size) for s in seeds] == [("u1", None, 1),
                                                                   ("u2", None, 0)]


@pytest.mark.parametrize(("document", "expected"), [
    ("42", "got int"),
    ('"hello"', "got str"),
    ("[]", "list of entities is empty"),
    ("[1]", "entry 0: expected an object"),
    ({"conversations": []}, "missing 'entity_id'"),
    ({"entity_id": "u1"}, "missing 'conversations'"),
    ({"entity_id": "u1", "conversations": {"id": "c1"}}, "'conversations' must be a list"),
    ({"entity_id": "u1", "conversations": "c1"}, "'conversations' must be a list"),
    ([{"entity_id": "u1", "conversations": []}, {"entity_id": "u2"}],
     "entry 1: missing 'conversations'"),
    ({"entity_id": True, "conversations": []}, "entity_id must be a non-empty string"),
    ({"entity_id": "u1", "process_id": "", "conversations": []}, "process_id"),
])
def test_a_file_of_the_wrong_shape_is_named_with_its_problem(tmp_path, document, expected):
    path = write(tmp_path, document)
    with pytest.raises(InvalidInputError) as caught:
        load_seed_file(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert expected in message
    assert "\n" not in message


def test_a_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file") as caught:
        load_seed_file(tmp_path / "absent.json")
    assert "absent.json" in str(caught.value)


def test_invalid_json_gives_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "entity_id": "u1",\n  "conversations": [,]\n}')
    with pytest.raises(InvalidInputError, match=r"not valid JSON \(Expecting value at line 3, "
                                                r"column 21\)"):
        load_seed_file(path)


@pytest.mark.parametrize("text, problem", [
    ('{"entity_id": "u1",\n "conversations": "a\x01b"}',
     "not valid JSON (Invalid control character at line 2, column 21)"),
    ('{"entity_id": "u1",\n "conversations": [{"id": "c',
     "not valid JSON (Unterminated string starting at line 2, column 27)"),
])
def test_broken_json_is_named_in_plain_words(tmp_path, text, problem):
    with pytest.raises(InvalidInputError) as caught:
        load_seed_file(write(tmp_path, text))
    assert str(caught.value).endswith(f"seed.json: {problem}")


def test_a_directory_cannot_be_read(tmp_path):
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_seed_file(tmp_path)


def test_bad_conversations_inside_a_good_file_fail_only_when_checked(tmp_path):
    path = write(tmp_path, {"entity_id": "u1", "conversations": [CONVERSATION, {"id": "c2"}]})
    [seed] = load_seed_file(path)
    checked = [parsed for _, parsed in check_conversations(seed)]
    assert isinstance(checked[1], Invalid) and "missing 'messages'" in checked[1].reason


def test_the_shipped_sample_is_valid():
    seeds = load_seed_file(files("memori_nb") / "data" / "sample_conversations.json")
    assert len(seeds) >= 2
    assert len({s.entity_id for s in seeds}) == len(seeds)
    for seed in seeds:
        assert seed.size and seed.size > 0
        ids = [c["id"] for c in seed.conversations]
        assert len(ids) == len(set(ids)), f"duplicate ids for {seed.entity_id}"
        for index, raw in enumerate(seed.conversations):
            parsed = parse_conversation(raw, index)
            assert not isinstance(parsed, Invalid), parsed.reason
        assert all(not isinstance(p, Invalid) for _, p in check_conversations(seed))


def conversations(seed):
    return [parsed for _, parsed in check_conversations(seed)]


def timed(cid, *stamps):
    return {"id": cid, "messages": [{"role": "user", "content": f"m{i}", "timestamp": s}
                                    for i, s in enumerate(stamps)]}


def test_day_first_is_decided_once_for_the_whole_file(tmp_path):
    """Entity u2's dates alone could be either way; u1's prove the file writes day first."""
    path = write(tmp_path, [{"entity_id": "u1", "conversations": [timed("c1", "13.01.2024")]},
                            {"entity_id": "u2", "conversations": [timed("c2", "12.01.2024")]}])
    _, u2 = load_seed_file(path)
    [c2] = conversations(u2)
    assert c2.messages[0].timestamp == datetime(2024, 1, 12, tzinfo=timezone.utc)


def test_a_file_whose_dates_could_be_either_asks(tmp_path):
    path = write(tmp_path, {"entity_id": "u1", "conversations": [
        timed("c1", "12.01.2024", "11.01.2024")]})
    with pytest.raises(AmbiguousTimestampsError, match="dayfirst") as caught:
        load_seed_file(path)
    assert str(caught.value).startswith(str(path))
    [seed] = load_seed_file(path, dayfirst=False)
    [c1] = conversations(seed)
    assert c1.messages[0].timestamp == datetime(2024, 12, 1, tzinfo=timezone.utc)
    [seed] = load_seed_file(path, timestamp_format="%d.%m.%Y")
    assert conversations(seed)[0].messages[1].timestamp.month == 1


def test_role_map_and_trimmed_entity_ids(tmp_path):
    path = write(tmp_path, {"entity_id": " u1 ", "conversations": [{"id": "c1", "messages": [
        {"role": "agent", "content": "Hello"}, {"role": "User", "content": "Hi"}]}]})
    [seed] = load_seed_file(path, role_map={"agent": "assistant"})
    assert (seed.entity_id, seed.warnings) == ("u1", ("entity id whitespace trimmed (' u1 ')",))
    [c1] = conversations(seed)
    assert [m.role for m in c1.messages] == ["assistant", "user"]


def test_json_nested_too_deeply_is_one_clear_error(tmp_path):
    path = write(tmp_path, '{"entity_id": "u1", "conversations": ' + "[" * 100_000
                 + "]" * 100_000 + "}")
    with pytest.raises(InvalidInputError) as caught:
        load_seed_file(path)
    assert str(caught.value) == f"{path}: JSON nested too deeply to read"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
