"""Helpers shared by the tests: a fake clock for retries, conversation builders."""

from __future__ import annotations

import asyncio

API_KEY = "test-key-0123456789-secret"


class FakeTime:
    """A clock that only moves when the code under test sleeps: retries cost no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def seed_with_fake_time(backend, conversations, store, *, fake_time, config=None):
    """Seed ``conversations`` of entity ``user-1`` through ``backend`` into ``store`` on
    ``fake_time`` (no jitter), closing the backend; the SeedResult."""
    from memori_nb.engine import seed_all
    from memori_nb.models import SeedConfig, SeedData

    async def go():
        try:
            return await seed_all(
                [SeedData.for_conversations(entity_id="user-1", conversations=conversations)],
                backend=backend, store=store, config=config or SeedConfig(),
                sleep=fake_time.sleep, clock=fake_time.clock, jitter=lambda: 0.0)
        finally:
            await backend.aclose()
    return asyncio.run(go())


def conversation(cid: str, *texts: str) -> dict:
    """A conversation alternating user/assistant turns, starting with the user."""
    roles = ("user", "assistant")
    return {"id": cid, "messages": [{"role": roles[i % 2], "content": text}
                                    for i, text in enumerate(texts)]}


def triple(obj: str):
    """A ``user likes <obj>`` triple."""
    from memori_nb.models import Triple

    return Triple(subject_name="user", subject_type="person", predicate="likes",
                  object_name=obj, object_type="thing")
