"""CPU cost of journaling a finished conversation (Journal.finished), on realistic sizes.

Prints thread CPU per conversation for the median conversation (about 7 kB), one of about
240 kB and the mean over 1,000 realistic conversations, beside a floor measured in the same
run: ``json.dumps`` of the bare ``[[role, content], ...]`` list, encoded (what escaping the
texts alone costs).

    python benchmarks/journal_cost.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from realistic import generate_conversations

from memori_nb import SeedData
from memori_nb.models import ConversationResult, Extraction, Triple
from memori_nb.stores.base import ResultRecord
from memori_nb.stores.journal import Journal
from memori_nb.validation import check_conversations


def conversations(n: int) -> list:
    parsed = []
    for entity in generate_conversations(n, seed=0):
        seed = SeedData.for_conversations(entity_id=entity["entity_id"],
                                          conversations=entity["conversations"])
        parsed += [c for _, c in check_conversations(seed)]
    return parsed


def record(conversation, extraction: Extraction) -> ResultRecord:
    result = ConversationResult(conversation_id=conversation.id, entity_id="u1",
                                status="succeeded", triples_count=len(extraction.triples),
                                summary=extraction.summary, chunks_processed=1,
                                duration_ms=300.0)
    return ResultRecord(result, conversation.content_hash(), None, extraction, conversation)


def cpu_ms(action, items: list, repeats: int) -> tuple[float, float]:
    """(min, median) thread CPU in ms per item over ``repeats`` passes."""
    runs = []
    for _ in range(repeats):
        started = time.thread_time()
        for item in items:
            action(item)
        runs.append((time.thread_time() - started) / len(items) * 1000)
    return min(runs), statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    parsed = conversations(1000)

    def size(c) -> int:
        return sum(len(m.content) for m in c.messages)

    parsed.sort(key=size)
    median = parsed[len(parsed) // 2]
    big = min(parsed, key=lambda c: abs(size(c) - 240_000))
    triples = tuple(Triple(subject_name="user", subject_type="person", predicate="likes",
                           object_name=f"thing {i}", object_type="thing") for i in range(5))
    extraction = Extraction(triples=triples, facts=tuple(t.fact for t in triples),
                            summary="s" * 300)
    cases = [(f"median ({len(median.messages)} messages, {size(median):,} chars)",
              [median] * 200),
             (f"large ({len(big.messages)} messages, {size(big):,} chars)", [big] * 20),
             ("mean over 1,000 realistic", parsed)]
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(Path(folder), "bench")
        for label, group in cases:
            records = [record(c, extraction) for c in group]
            low, mid = cpu_ms(journal.finished, records, args.repeats)
            bare = [[[m.role, m.content] for m in c.messages] for c in group]
            floor, _ = cpu_ms(lambda data: json.dumps(data, separators=(",", ":")).encode(
                "ascii"), bare, args.repeats)
            print(f"{label:42s} journal {low:.3f}-{mid:.3f} ms/conv (min-median); "
                  f"floor json.dumps of the texts {floor:.3f} ms")
        journal.close(delete=True)


if __name__ == "__main__":
    main()
