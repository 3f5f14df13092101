"""Chunking: no request over either limit, nothing lost or reordered, and plans add up."""

import random

import pytest

from memori_nb.chunking import (oversize_reason, plan_conversation, plan_seeds, split_messages,
                                total_plan)
from memori_nb.models import Conversation, Message, SeedConfig, SeedData


def msgs(*contents: str) -> tuple[Message, ...]:
    roles = ("user", "assistant")
    return tuple(Message(role=roles[i % 2], content=c) for i, c in enumerate(contents))


def conversation(*contents: str, cid: str = "c1") -> Conversation:
    return Conversation(id=cid, messages=msgs(*contents))


def contents(chunks) -> list[list[str]]:
    return [[m.content for m in chunk] for chunk in chunks]


def test_packs_in_order_up_to_both_limits():
    config = SeedConfig(max_messages_per_request=3, max_chars_per_request=10)
    chunks = split_messages(msgs("aaaa", "bbbb", "cc", "ddddd", "e", "f", "g", "h" * 10), config)
    assert contents(chunks) == [["aaaa", "bbbb", "cc"], ["ddddd", "e", "f"], ["g"], ["h" * 10]]


def test_a_conversation_within_limits_is_one_chunk():
    messages = msgs("hello", "hi")
    assert split_messages(messages, SeedConfig()) == [messages]


def test_a_long_message_is_split_at_spaces():
    config = SeedConfig(max_chars_per_request=10)
    message = Message(role="assistant", content="hello world this is long", timestamp="t0")
    chunks = split_messages((message,), config)
    assert contents(chunks) == [["hello "], ["world "], ["this is "], ["long"]]
    assert all(m.role == "assistant" and m.timestamp == "t0" for c in chunks for m in c)


def test_a_long_message_without_spaces_is_cut_hard():
    chunks = split_messages(msgs("x" * 25), SeedConfig(max_chars_per_request=10))
    assert [len(m.content) for c in chunks for m in c] == [10, 10, 5]


@pytest.mark.parametrize("seed", range(20))
def test_every_chunk_respects_the_limits_and_nothing_is_lost(seed):
    rng = random.Random(seed)
    words = ["a", "tiny", "word", "considerably", "x" * 30, "lorem ipsum"]
    messages = msgs(*(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
                      for _ in range(rng.randint(1, 40))))
    config = SeedConfig(max_messages_per_request=rng.randint(1, 8),
                        max_chars_per_request=rng.randint(1, 120))
    chunks = split_messages(messages, config)
    for chunk in chunks:
        assert 1 <= len(chunk) <= config.max_messages_per_request
        assert sum(len(m.content) for m in chunk) <= config.max_chars_per_request
    parts = [m for chunk in chunks for m in chunk]
    assert all(m.content for m in parts)
    assert "".join(m.content for m in parts) == "".join(m.content for m in messages)
    # Parts of one message stay together, in order, under its role.
    rebuilt, roles = [], []
    for part in parts:
        if rebuilt and len(rebuilt[-1]) < len(messages[len(rebuilt) - 1].content):
            rebuilt[-1] += part.content
        else:
            rebuilt.append(part.content)
            roles.append(part.role)
    assert rebuilt == [m.content for m in messages]
    assert roles == [m.role for m in messages]


def test_plan_of_a_conversation_over_the_message_limit():
    config = SeedConfig(max_messages_per_request=2, max_chars_per_request=100)
    plan = plan_conversation(conversation("a" * 5, "b" * 12, "c" * 3), config)
    assert (plan.messages, plan.characters, plan.largest_message) == (3, 20, 12)
    assert (plan.requests, plan.over_limit, plan.estimated_tokens) == (2, True, 5)


def test_plan_of_a_conversation_over_the_character_limit():
    config = SeedConfig(max_chars_per_request=10)
    plan = plan_conversation(conversation("x" * 21), config)
    assert (plan.messages, plan.characters, plan.largest_message) == (1, 21, 21)
    assert (plan.requests, plan.over_limit, plan.estimated_tokens) == (3, True, 6)


def test_plan_of_a_conversation_that_fits():
    plan = plan_conversation(conversation("hello", "hi there"), SeedConfig())
    assert (plan.messages, plan.characters, plan.largest_message) == (2, 13, 8)
    assert (plan.requests, plan.over_limit, plan.estimated_tokens) == (1, False, 4)


def test_oversize_reason_names_the_size_and_the_limits():
    config = SeedConfig(max_messages_per_request=2, max_chars_per_request=1500,
                        chunk_large_conversations=False)
    big = conversation("a" * 1000, "b" * 1000, "c")
    reason = oversize_reason(big, plan_conversation(big, config), config)
    assert "'c1'" in reason
    assert "3 messages" in reason and "2,001 characters" in reason
    assert "2 messages" in reason and "1,500 characters" in reason
    assert "chunk_large_conversations=True" in reason and "2 requests" in reason


def seeds() -> list[SeedData]:
    user = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    return [
        SeedData.for_conversations(entity_id="u1", conversations=[
            {"id": "c1", "messages": user},
            {"id": "c2", "messages": []},
            {"id": "c3", "messages": [{"role": "user", "content": ch * 15} for ch in "abc"]},
        ]),
        SeedData.for_conversations(entity_id="u2", conversations=[
            {"id": "c1", "messages": [{"role": "user", "content": "x" * 8}]}]),
    ]


def test_plan_rows_and_totals_with_chunking():
    config = SeedConfig(max_messages_per_request=2, max_chars_per_request=20)
    rows = list(plan_seeds(seeds(), config))
    assert [(r.entity_id, r.conversation_id, r.messages, r.characters, r.estimated_tokens,
             r.requests, r.largest_message, r.over_limit) for r in rows] == [
        ("u1", "c1", 2, 13, 4, 1, 8, False),
        ("u1", "c2", 0, 0, 0, 0, 0, False),
        ("u1", "c3", 3, 45, 12, 3, 15, True),
        ("u2", "c1", 1, 8, 2, 1, 8, False),
    ]
    assert [r.error is None for r in rows] == [True, False, True, True]
    assert "'c2'" in rows[1].error and "messages is empty" in rows[1].error
    totals = total_plan(rows)
    assert (totals.entities, totals.conversations, totals.valid, totals.invalid) == (2, 4, 3, 1)
    assert (totals.messages, totals.characters, totals.estimated_tokens) == (6, 66, 18)
    assert (totals.requests, totals.over_limit) == (5, 1)


def test_without_chunking_an_oversized_conversation_is_an_error_row():
    config = SeedConfig(max_messages_per_request=2, max_chars_per_request=20,
                        chunk_large_conversations=False)
    rows = list(plan_seeds(seeds(), config))
    c3 = rows[2]
    assert c3.conversation_id == "c3" and c3.over_limit
    assert "too large" in c3.error and "45 characters" in c3.error
    totals = total_plan(rows)
    assert (totals.valid, totals.invalid, totals.over_limit) == (2, 2, 1)
    assert (totals.messages, totals.characters, totals.estimated_tokens, totals.requests) == (
        3, 21, 6, 2)


def test_total_of_an_empty_plan_is_zero():
    totals = total_plan([])
    assert (totals.entities, totals.conversations, totals.messages, totals.requests) == (
        0, 0, 0, 0)
