"""Most-requests-first within a window; results still in input order (issue 10, target 2)."""

from __future__ import annotations

from memori_nb import SeedConfig
from memori_nb.engine import FIRST_WINDOW

from helpers import conversation
from test_engine import many, run_seed


def long_conversation(cid, messages=9):
    return conversation(cid, *[f"{cid} {i}: I love sailing and chess." for i in range(messages)])


def sent_order(server):
    """Conversation ids in the order their requests reached the server, once each."""
    ids = [r.body["conversation"]["messages"][0]["content"].split(" ")[0] for r in server.requests]
    return list(dict.fromkeys(ids))


def test_a_many_chunk_conversation_late_in_a_window_is_sent_first(server):
    conversations = many(7, "small")
    for index, c in enumerate(conversations):
        c["messages"][0]["content"] = f"c{index} I live in Porto."
    conversations.insert(5, long_conversation("long"))
    result, _ = run_seed(server, conversations, config=SeedConfig(
        batch_size=1, max_messages_per_request=3))
    assert sent_order(server)[0] == "long"
    # Its three chunks, then the small ones as they came (the sort keeps ties in order).
    assert sent_order(server)[1:] == [f"c{i}" for i in range(7)]
    assert result.successful == 8
    assert [r.conversation_id for r in result.results] == [c["id"] for c in conversations]
    assert result.results[5].chunks_processed == 3


def test_the_look_ahead_is_the_window_a_later_one_waits_its_turn(server):
    conversations = many(FIRST_WINDOW + 6)
    for index, c in enumerate(conversations):
        c["messages"][0]["content"] = f"c{index} I live in Porto."
    conversations[FIRST_WINDOW + 2] = long_conversation("long")
    result, _ = run_seed(server, conversations, config=SeedConfig(
        batch_size=1, max_messages_per_request=3))
    order = sent_order(server)
    assert order.index("long") == FIRST_WINDOW  # after the whole first window, first of its own
    assert result.successful == FIRST_WINDOW + 6
    assert [r.conversation_id for r in result.results] == [c["id"] for c in conversations]
