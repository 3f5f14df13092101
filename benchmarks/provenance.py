"""What provenance costs at write time, and how often it names the right turn.

- cost: :func:`memori_nb.provenance.locate` on realistic conversations (benchmarks/realistic.py)
  with the facts the ``local`` extractor finds in them, CPU microseconds per conversation
  (mean, median, p99, max); the store runs it once per succeeded conversation.
- agreement with the extractor: per fact, whether the located messages are the user messages
  the ``local`` extractor took it from (it extracts message by message, so that is known).
- LoCoMo (../shared/data/locomo/locomo10.json, when present): each annotated observation of a
  session, taken as a fact of its speaker (whose turns are the "user" messages), against its
  annotated evidence turn.

    python benchmarks/provenance.py [--conversations 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from realistic import generate_conversations

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memori_nb.backends.local import extract  # noqa: E402
from memori_nb.models import Message  # noqa: E402
from memori_nb.provenance import locate  # noqa: E402

LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"


def realistic(n: int, seed: int) -> None:
    costs, facts_n, same, overlapping = [], 0, 0, 0
    for entity in generate_conversations(n, seed=seed):
        for raw in entity["conversations"]:
            messages = [Message(role=m["role"], content=m["content"]) for m in raw["messages"]]
            truth: dict[str, set[int]] = {}
            for i, message in enumerate(messages):
                if message.role == "user":
                    for fact in extract([message]).facts:
                        truth.setdefault(fact, set()).add(i)
            facts = list(truth)
            start = time.process_time()
            located = locate(facts, messages)
            costs.append(time.process_time() - start)
            for fact, positions in zip(facts, located):
                facts_n += 1
                same += set(positions) == truth[fact]
                overlapping += bool(set(positions) & truth[fact])
    costs.sort()
    us = [c * 1e6 for c in costs]
    print(f"realistic: {len(costs)} conversations, {facts_n} facts; locate CPU per conversation: "
          f"mean {statistics.fmean(us):.0f} us, median {statistics.median(us):.0f} us, "
          f"p99 {us[int(len(us) * 0.99)]:.0f} us, max {us[-1] / 1000:.1f} ms")
    print(f"  sources are the extractor's messages for {same / facts_n:.1%} of facts, "
          f"include one of them for {overlapping / facts_n:.1%}")


def locomo() -> None:
    if not LOCOMO.exists():
        print(f"LoCoMo: not here ({LOCOMO}), skipped")
        return
    n = none = hit = exact = sessions = 0
    for sample in json.loads(LOCOMO.read_text()):
        talk, notes = sample["conversation"], sample["observation"]
        for key, turns in talk.items():
            if not key.startswith("session_") or key.endswith("date_time"):
                continue
            for speaker, items in notes.get(f"{key}_observation", {}).items():
                messages = [Message(role="user" if t["speaker"] == speaker else "assistant",
                                    content=t["text"]) for t in turns]
                ids = [t["dia_id"] for t in turns]
                sessions += 1
                for (_, evidence), positions in zip(items, locate([o[0] for o in items],
                                                                  messages)):
                    wanted = set(evidence if isinstance(evidence, list) else [evidence])
                    got = {ids[p] for p in positions}
                    n += 1
                    none += not positions
                    hit += bool(got & wanted)
                    exact += got == wanted
    print(f"LoCoMo: {n} observations in {sessions} speaker-sessions: located {1 - none / n:.1%}; "
          f"sources include the evidence turn for {hit / n:.1%}, are exactly it for "
          f"{exact / n:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    realistic(args.conversations, args.seed)
    locomo()


if __name__ == "__main__":
    main()
