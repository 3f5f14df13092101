"""The words and small HTML that describe a finished run, shared by the notebook helpers, the
panel and the CLI (``str(result)`` and Jupyter's display of a :class:`SeedResult` too).

Pure: takes a :class:`~memori_nb.models.SeedResult`, returns text.
"""

from __future__ import annotations

import html
import re
from collections import Counter

from .models import ALREADY_SEEDED, CLAIMED_ELSEWHERE, SeedResult
from .pricing import describe_usage, format_cost


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``"1 conversation"``, ``"2 conversations"``, ``"1,234 triples"``; ``nouns`` is the
    plural when it is not ``noun + "s"``.

    Example:
        >>> plural(1, "conversation"), plural(0, "triple"), plural(2, "retry", "retries")
        ('1 conversation', '0 triples', '2 retries')
    """
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def skipped_reasons(result: SeedResult) -> dict[str, int]:
    """Why the run's conversations were skipped, as count phrases, most common first:
    ``{"already seeded": 24, "not sent": 3}`` (each reads after its count: "3 not sent").

    From the per-conversation results when the run kept them; otherwise a run that was not
    stopped skipped what was already seeded and what other workers held
    (``claimed_elsewhere``), and a stopped one cannot tell (``{}``).
    """
    if not result.skipped:
        return {}
    if result.results:
        return dict(Counter(_skip_phrase(r.reason) for r in result.results
                            if r.status == "skipped").most_common())
    if result.stopped_reason:
        return {}
    reasons = {ALREADY_SEEDED: result.skipped - result.claimed_elsewhere,
               _skip_phrase(CLAIMED_ELSEWHERE): result.claimed_elsewhere}
    return {phrase: n for phrase, n in sorted(reasons.items(), key=lambda item: -item[1]) if n}


def describe_seed_result(result: SeedResult, *, suffix: str = "") -> str:
    """One line a person reads after a run: what happened to its conversations (succeeded,
    failed, already seeded, not sent ...), triples, tokens and cost when the backend reported
    them, and why the run stopped early.

    "Seeded N conversations" leads only when some succeeded; otherwise the line starts with
    the count of conversations ("3 conversations in 0.4 s: 3 failed").

    Args:
        result: the run.
        suffix: said after the counts, before why the run stopped (e.g. ``" (run ab12)"``).

    Example:
        >>> from memori_nb.models import SeedResult
        >>> describe_seed_result(SeedResult(run_id="r1", total=37, successful=0, failed=0,
        ...                                 skipped=37, total_triples=0, duration_ms=80))
        'Nothing to seed: all 37 conversations already seeded'
        >>> describe_seed_result(SeedResult(run_id="r2", total=2, successful=0, failed=2,
        ...                                 skipped=0, total_triples=0, duration_ms=80))
        '2 conversations in 0.1 s: 2 failed'
    """
    text = _counts(result) + suffix
    if result.stopped_reason:
        text += f". The run stopped early: {result.stopped_reason}"
    return text


def _counts(result: SeedResult) -> str:
    reasons = skipped_reasons(result)
    if result.total and result.skipped == result.total and not result.stopped_reason:
        if list(reasons) == [ALREADY_SEEDED]:
            return ("Nothing to seed: the conversation is already seeded" if result.total == 1
                    else f"Nothing to seed: all {result.total:,} conversations already seeded")
        return f"Nothing to seed: {_skipped(result.skipped, reasons)}"
    if not result.total and not result.stopped_reason:
        return "Nothing to seed: no conversations"
    # "0 succeeded" is said unless the failures already say that nothing succeeded.
    parts = [f"{result.successful:,} succeeded"] if result.successful or not result.failed \
        else []
    if result.failed:
        parts.append(f"{result.failed:,} failed")
    if result.skipped:
        parts.append(_skipped(result.skipped, reasons, stopped=bool(result.stopped_reason)))
    # "Seeded" only when something was: a run that stopped or failed throughout did not seed.
    lead = "Seeded " if result.successful else ""
    text = (f"{lead}{plural(result.total, 'conversation')} in "
            f"{result.duration_ms / 1000:.1f} s: {', '.join(parts)}")
    if result.successful:
        text += f"; {plural(result.total_triples, 'triple')}"
    usage = describe_usage(result.prompt_tokens, result.completion_tokens, result.cost)
    return f"{text}; {usage}" if usage else text


def seed_result_html(result: SeedResult) -> str:
    """A small HTML table of a run's totals (tokens and cost when known, why it stopped):
    how Jupyter shows a :class:`SeedResult`."""
    reasons = skipped_reasons(result)
    skipped = f"{result.skipped:,}" + (f" ({_why(reasons)})" if reasons else "")
    rows = [("succeeded", f"{result.successful:,}"), ("failed", f"{result.failed:,}"),
            ("skipped", skipped), ("triples", f"{result.total_triples:,}"),
            ("duration", f"{result.duration_ms / 1000:.1f} s")]
    if result.prompt_tokens is not None or result.completion_tokens is not None:
        rows.append(("tokens", f"{result.prompt_tokens or 0:,} prompt + "
                               f"{result.completion_tokens or 0:,} completion"))
    if result.cost is not None:
        rows.append(("cost", format_cost(result.cost)))
    if result.stopped_reason:
        rows.append(("stopped", result.stopped_reason))
    rows.append(("run", result.run_id))
    cells = "".join(f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
                    f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
                    for name, value in rows)
    caption = html.escape(_counts(result))
    return (f"<table class='memori-nb-result'><caption style='text-align:left'>{caption}"
            f"</caption>{cells}</table>")


def _skipped(count: int, reasons: dict[str, int], *, stopped: bool = False) -> str:
    """``"24 already seeded"``, ``"2 already seeded, 1 not sent"``; when the reasons are not
    known (the run kept no results), ``"3 skipped (not sent or already seeded)"`` for a run
    that stopped."""
    if not reasons:
        return f"{count:,} skipped" + (" (not sent or already seeded)" if stopped else "")
    return ", ".join(f"{n:,} {phrase}" for phrase, n in reasons.items())


def _why(reasons: dict[str, int]) -> str:
    if len(reasons) == 1:
        return next(iter(reasons))
    return ", ".join(f"{n:,} {phrase}" for phrase, n in reasons.items())


# "run stopped (quota exhausted) after 2 of 5 chunks; ...": some chunks went, not all.
_PARTLY = re.compile(r"\bafter \d[\d,]* of \d")


def _skip_phrase(reason: str | None) -> str:
    """A skipped result's reason as a phrase that reads after any count: ``"already
    seeded"``, ``"already in this run"``, ``"not sent"`` (the run stopped before it),
    ``"partly sent"`` (it stopped between a conversation's chunks)."""
    reason = reason or ""
    if reason.startswith("run stopped"):
        return "partly sent" if _PARTLY.search(reason) else "not sent"
    # A reason's first words group it ("already in this run (same id ...)").
    label = reason.split(" (")[0].split(";")[0]
    if label in (ALREADY_SEEDED, "already in this run"):
        return label
    return f"skipped ({label or 'no reason given'})"
