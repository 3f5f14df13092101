"""Most requests first, across windows too; the first requests go out while the input is
still being validated; results still in input order (issue 10, target 2)."""

from __future__ import annotations

import asyncio
import time

from memori_nb import SeedConfig, SeedData
from memori_nb.backends import MemoriBackend
from memori_nb.engine import FIRST_WINDOW, seed_all
from memori_nb.stores import DuckDBStore
from memori_nb.testing import AugmentationServer

from helpers import API_KEY, conversation
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


def test_a_giant_validated_late_is_sent_before_the_small_ones_queued_ahead_of_it():
    conversations = many(FIRST_WINDOW + 6)
    for index, c in enumerate(conversations):
        c["messages"][0]["content"] = f"c{index} I live in Porto."
    conversations[FIRST_WINDOW + 2] = long_conversation("long")
    # A latency keeps the queue (4 per slot) full while the second window is validated.
    with AugmentationServer(api_key=API_KEY, latency=0.02) as server:
        result, _ = run_seed(server, conversations, config=SeedConfig(
            batch_size=1, max_messages_per_request=3))
        order = sent_order(server)
    # It jumps what the first window still had queued (FIFO would send it at FIRST_WINDOW).
    assert FIRST_WINDOW - 4 <= order.index("long") < FIRST_WINDOW
    assert order[order.index("long") + 1:] == [f"c{i}" for i in range(FIRST_WINDOW + 6)
                                               if f"c{i}" not in order[:order.index("long")]
                                               and i != FIRST_WINDOW + 2]
    assert result.successful == FIRST_WINDOW + 6
    assert [r.conversation_id for r in result.results] == [c["id"] for c in conversations]


def test_requests_start_while_a_large_input_is_still_being_validated():
    # 700 conversations fit in the queue of a 200-wide window: validating them all before
    # the first request would leave the window empty for that long.
    yielded_at: list[float] = []

    def stream():
        for index in range(700):
            yielded_at.append(time.monotonic())
            texts = [f"c{index}: I live in Porto, message {i}." for i in range(20)]
            yield SeedData.for_conversations(entity_id="u",
                                             conversations=[conversation(f"c{index}", *texts)])

    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        async def go():
            backend = MemoriBackend(api_key=API_KEY, base_url=server.url)
            try:
                return await seed_all(stream(), backend=backend, store=DuckDBStore(":memory:"),
                                      config=SeedConfig(batch_size=200))
            finally:
                await backend.aclose()

        result = asyncio.run(go())
        first_request = min(r.received_at for r in server.requests)
    assert result.successful == 700
    assert first_request < yielded_at[-1]
