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
