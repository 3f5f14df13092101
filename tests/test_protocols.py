"""The wire protocols (memori_nb.protocols): AA and chat completions, both sides."""

from __future__ import annotations

import json

import pytest

from memori_nb.backends.base import AugmentationRequest
from memori_nb.errors import TransientError
from memori_nb.models import Extraction, Message, Usage
from memori_nb.pricing import Pricing, estimate_tokens
from memori_nb.protocols import aa, chat
from memori_nb.ratelimit import exhausted_for, parse_duration, retry_after_seconds

REQUEST = AugmentationRequest(
    entity_id="user-1", conversation_id="c1", summary="The user lives in Lisbon.",
    messages=(Message(role="user", content="My sister Ana is a nurse."),
              Message(role="assistant", content="That is a demanding job!")))


def completion(content, finish_reason="stop", usage=None):
    return json.dumps(chat.completion(content, model="m", finish_reason=finish_reason,
                                      usage=usage)).encode()


GOOD = {"subject": {"name": "user", "type": "person"}, "predicate": "has_sister",
        "object": {"name": "Ana", "type": "person"}}


# --- AA -------------------------------------------------------------------------------------

def test_aa_request_round_trips_through_the_server_side():
    body, problem = aa.parse_request(aa.encode_payload(REQUEST))
    assert problem is None
    assert body["conversation"]["summary"] == "The user lives in Lisbon."
    assert [m["content"] for m in body["conversation"]["messages"]][0] == \
        "My sister Ana is a nurse."
    assert "user-1" not in json.dumps(body)  # ids leave only as digests


def test_aa_answer_built_by_the_server_parses_back_on_the_client():
    extraction = chat.parse_answer(completion(json.dumps(
        {"triples": [GOOD], "summary": "s", "attributes": ["a"]}))).extraction
    back = aa.parse_extraction(json.dumps(aa.answer_from_extraction(extraction)).encode())
    assert back.triples == extraction.triples and back.facts == ("user has_sister Ana",)
    assert back.summary == "s" and back.attributes == ("a",)


@pytest.mark.parametrize("raw, problem", [
    (b"not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"conversation": {"messages": [{"role": 1}]}}', "messages[0]"),
    (b'{"conversation": {"messages": [], "summary": 3}}', "summary"),
])
def test_aa_server_side_names_what_is_wrong(raw, problem):
    assert problem in aa.parse_request(raw)[1]


# --- chat: requests -------------------------------------------------------------------------

def test_each_mode_asks_for_structured_output_its_own_way():
    schema = chat.build_request(REQUEST, model="m", mode="json_schema")
    assert schema["response_format"]["type"] == "json_schema"
    assert schema["response_format"]["json_schema"]["strict"] is True
    assert schema["response_format"]["json_schema"]["schema"] == chat.EXTRACTION_SCHEMA
    inside = chat.build_request(REQUEST, model="m", mode="json_object_schema")
    assert inside["response_format"] == {"type": "json_object", "schema": chat.EXTRACTION_SCHEMA}
    plain = chat.build_request(REQUEST, model="m", mode="json_object")
    assert plain["response_format"] == {"type": "json_object"}
    # Without a schema in response_format, it is in the prompt.
    assert '"triples"' in plain["messages"][0]["content"]
    assert '"triples"' not in schema["messages"][0]["content"]
    for body in (schema, inside, plain):
        assert set(body) == {"model", "messages", "temperature", "max_tokens", "response_format"}
    assert [chat.request_mode(b) for b in (schema, inside, plain)] == list(chat.MODES)


def test_the_chunk_and_the_previous_summary_go_in_and_come_back_out_on_the_server():
    body = chat.build_request(REQUEST, model="m", temperature=0.3, max_tokens=99)
    assert (body["temperature"], body["max_tokens"]) == (0.3, 99)
    assert "user-1" not in json.dumps(body)  # the model needs the words, not the ids
    call, problem = chat.parse_request(chat.encode_request(body))
    assert problem is None
    assert call.summary == "The user lives in Lisbon."
    assert call.messages == [{"role": "user", "content": "My sister Ana is a nurse."},
                             {"role": "assistant", "content": "That is a demanding job!"}]
    assert call.mode == "json_schema" and call.model == "m"


def test_the_prompt_says_what_to_extract_and_what_not():
    prompt = chat.SYSTEM_PROMPT.lower()
    for word in ("identity", "relationships", "places", "work", "preferences", "possessions",
                 "plans", "health", "dated events", "hypothetical", "quoted", "assistant",
                 "previous summary", "json"):
        assert word in prompt, word


def test_prompt_overhead_is_what_a_request_adds_around_the_conversation():
    empty = AugmentationRequest(entity_id="e", conversation_id="c", messages=())
    for mode in chat.MODES:
        body = chat.build_request(empty, model="m", mode=mode)
        overhead = chat.prompt_overhead_characters(mode)
        assert chat.prompt_characters(body) <= overhead
        assert overhead - chat.prompt_characters(body) < len(json.dumps(chat.EXTRACTION_SCHEMA)) \
            + 100
    assert chat.prompt_overhead_characters("json_object") > len(chat.SYSTEM_PROMPT)


def test_pricing_and_the_token_rule_of_thumb():
    assert estimate_tokens(0) == 0 and estimate_tokens(4) == 1 and estimate_tokens(5) == 2
    cost = Pricing(2.0, 8.0).cost(Usage(prompt_tokens=500_000, completion_tokens=250_000))
    assert cost == pytest.approx(3.0)


# --- chat: answers --------------------------------------------------------------------------

CONTENT = json.dumps({"triples": [GOOD], "summary": "Ana is a nurse.", "attributes": []})


@pytest.mark.parametrize("content", [
    CONTENT,
    f"```json\n{CONTENT}\n```",
    f"Sure! Here you go:\n```\n{CONTENT}\n```\nAnything else?",
    f"<think>The user has a sister {{maybe}}.</think>\n{CONTENT}",
    f"<THINK>\nhmm {{\"triples\": [}}\n</THINK>```json\n{CONTENT}```",
    f"The memories: {CONTENT} -- done",
])
def test_fences_think_blocks_and_chatter_around_the_json_are_dropped(content):
    answer = chat.parse_answer(completion(content))
    assert answer.extraction.facts == ("user has_sister Ana",)
    assert answer.extraction.summary == "Ana is a nurse." and answer.warnings == ()


def test_a_bad_triple_is_dropped_with_a_warning_and_the_others_kept():
    bad = [{"subject": {"name": "", "type": "person"}, "predicate": "likes",
            "object": {"name": "x", "type": "thing"}},
           {"subject": {"name": "user"}, "predicate": " ", "object": {"name": "y"}},
           {"subject": {"name": "user", "type": 3}, "predicate": "p", "object": {"name": "y"}},
           "user likes tea"]
    age = {"subject": {"name": "user"}, "predicate": "is_aged", "object": {"name": 41}}
    content = json.dumps({"triples": [GOOD, *bad, age], "summary": "s", "attributes": []})
    answer = chat.parse_answer(completion(content))
    assert answer.extraction.facts == ("user has_sister Ana", "user is_aged 41")
    assert answer.extraction.triples[1].subject_type == "unknown"
    assert answer.warnings == ("triple 1 dropped: subject.name is empty",
                               "triple 2 dropped: predicate is empty",
                               "triple 3 dropped: subject.type is a int, not a string",
                               "triple 4 dropped: a str, not an object")


@pytest.mark.parametrize("data, why", [
    (completion(CONTENT[:40], finish_reason="length"), "finish_reason 'length'"),
    (completion("I could not find any facts."), "no JSON object"),
    (completion("<think>" + CONTENT), "no JSON object"),  # never closed: all thinking
    (completion('{"facts": ["x"]}'), "no 'triples' list"),
    (b'{"choices": []}', "no choices"),
    (b"<html>", "not JSON"),
])
def test_an_answer_with_nothing_usable_is_malformed_and_retryable(data, why):
    with pytest.raises(TransientError, match="malformed") as caught:
        chat.parse_answer(data, context={"conversation_id": "c9"})
    assert why in str(caught.value) and caught.value.conversation_id == "c9"


def test_usage_is_read_when_sent_and_none_when_not():
    used = chat.parse_answer(completion(CONTENT, usage=Usage(prompt_tokens=7,
                                                             completion_tokens=3)))
    assert used.extraction.usage == Usage(prompt_tokens=7, completion_tokens=3)
    assert chat.parse_answer(completion(CONTENT)).extraction.usage is None


def test_strings_in_the_answer_are_redacted():
    content = json.dumps({"triples": [GOOD], "summary": "key sk-abcdefghijkl", "attributes": []})
    answer = chat.parse_answer(completion(content), lambda text: text.replace("sk-", "[k]"))
    assert answer.extraction.summary == "key [k]abcdefghijkl"


def test_the_server_answer_holds_the_extraction_the_client_reads():
    extraction = Extraction(triples=chat.parse_answer(completion(CONTENT)).extraction.triples,
                            summary="sum", attributes=("help",))
    text = json.dumps(chat.answer_content(extraction))
    back = chat.parse_answer(completion(text)).extraction
    assert (back.triples, back.summary, back.attributes) == (extraction.triples, "sum",
                                                             ("help",))


# --- rate-limit headers ---------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("6m0s", 360.0), ("1.5s", 1.5), ("20ms", 0.02), ("1h2m3s", 3723.0), ("2", 2.0),
    ("soon", None), ("", None), ("5x", None)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("headers, seconds", [
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after-ms": "250", "Retry-After": "1"}, 0.25),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s",
      "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "6m0s"}, 1.5),
    ({}, None)])
def test_retry_after_from_each_header_form(headers, seconds):
    assert retry_after_seconds(headers) == seconds


def test_remaining_zero_says_how_long_to_hold():
    assert exhausted_for({"x-ratelimit-remaining-tokens": "0",
                          "x-ratelimit-reset-tokens": "2s"}) == 2.0
    assert exhausted_for({"x-ratelimit-remaining-tokens": "5",
                          "x-ratelimit-reset-tokens": "2s"}) is None


def test_message_overhead_counts_the_framing_of_each_message():
    empty = chat.conversation_text((), None)
    messages = (Message(role="user", content="abc"), Message(role="assistant", content="de"))
    framing = len(chat.conversation_text(messages, None)) - len(empty) - 5
    estimate = sum(chat.message_overhead_characters(m.role) for m in messages)
    assert 0 <= estimate - framing <= 2  # the last message has no separator


@pytest.mark.parametrize(("triple", "reason"), [
    ({"subject": {"name": "user"}, "predicate": "likes", "object": {"name": "{"}},
     "object.name '{' has no letter or digit"),
    ({"subject": {"name": "Assistant"}, "predicate": "offers", "object": {"name": "help"}},
     "about the assistant, not the user"),
])
def test_triples_a_small_model_gets_wrong_are_refused_with_a_reason(triple, reason):
    assert chat.check_triple(triple) == (None, reason)


def test_usage_counts_no_server_could_mean_are_unreadable():
    assert chat.parse_usage({"prompt_tokens": 2 ** 63, "completion_tokens": 1}) is None
    assert chat.parse_usage({"prompt_tokens": 12, "completion_tokens": 3}).total_tokens == 15


def test_an_answer_given_as_content_parts_is_read_from_its_text_parts():
    text = json.dumps({"triples": [{"subject": {"name": "user", "type": "person"},
                                    "predicate": "lives_in",
                                    "object": {"name": "Lisbon", "type": "place"}}],
                       "summary": "s", "attributes": []})
    body = {"choices": [{"finish_reason": "stop", "message": {"content": [
        {"type": "text", "text": text[:20]}, {"type": "image_url", "image_url": {}},
        {"type": "text", "text": text[20:]}]}}]}
    answer = chat.parse_answer(json.dumps(body).encode())
    assert [t.fact for t in answer.extraction.triples] == ["user lives_in Lisbon"]
