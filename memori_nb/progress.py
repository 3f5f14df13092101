"""Progress displays for a seeding run, on the engine's small progress protocol.

:class:`TqdmProgress` uses ``tqdm.auto``: a widget bar in Jupyter, a console bar elsewhere.
The postfix shows live counts of succeeded, failed, skipped, retries and triples, and the
tokens and cost so far for a backend that reports them.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .models import ConversationResult, SeedCounters
from .pricing import format_cost

# Refreshing the postfix is the costly part of a bar; do it at most this often.
POSTFIX_INTERVAL_SECONDS = 0.25


class TqdmProgress:
    """A tqdm bar over conversations.

    Args:
        description: the bar's label.
        file: where a console bar is drawn (stderr by default, so stdout stays clean).
        disable: turn the bar off (e.g. for ``--json`` runs that are not on a terminal).
        notebook: force the widget bar (True) or the console bar (False); None lets
            ``tqdm.auto`` decide.
        summary: write the line that sums up the run under the bar when it ends (the CLI
            writes its own).
    """

    def __init__(self, description: str = "seeding", *, file: IO[str] | None = None,
                 disable: bool = False, notebook: bool | None = None,
                 summary: bool = True) -> None:
        self.description, self.file, self.disable = description, file, disable
        self.notebook, self.summary = notebook, summary
        self.bar: Any = None
        self._last_postfix = 0.0

    def open(self, total: int | None) -> None:
        """Create the bar now, on this thread (a widget must be displayed from the thread
        running the cell; the run itself may update it from a worker thread)."""
        if self.notebook is None:
            from tqdm.auto import tqdm
        elif self.notebook:
            from tqdm.notebook import tqdm
        else:
            from tqdm import tqdm
        self.bar = tqdm(total=total, desc=self.description, unit="conv",
                        file=self.file if self.file is not None else sys.stderr,
                        disable=self.disable, dynamic_ncols=True)

    def start(self, counters: SeedCounters) -> None:
        if self.bar is None:
            self.open(counters.total)

    def update(self, counters: SeedCounters, result: ConversationResult) -> None:
        now = time.monotonic()
        if now - self._last_postfix >= POSTFIX_INTERVAL_SECONDS:
            self._last_postfix = now
            self.bar.set_postfix(postfix_for(counters), refresh=False)
        self.bar.update(1)

    def close(self, counters: SeedCounters) -> None:
        """Show the final counts and colour the bar: green when nothing failed, amber when
        some conversations failed (or the run was interrupted), red when all failed or the
        run stopped on an error (:attr:`SeedCounters.outcome`)."""
        if self.bar is None:
            return
        self.bar.set_postfix(postfix_for(counters), refresh=False)
        outcome = counters.outcome
        widget = getattr(self.bar, "container", None)  # tqdm.notebook's bar, in Jupyter
        if widget is None:
            self.bar.colour = _TERMINAL_COLOURS[outcome]  # drawn by close()'s last refresh
        self.bar.close()
        if widget is not None:
            # close() colours by the count alone (green at the total, else red): say more.
            widget.children[1].bar_style = outcome


    def note(self, text: str, *, final: bool = False) -> None:
        """A line for the person beside the bar: that the run resumes, or (``final``) how
        it ended. A widget bar's line goes to the cell's output, a console bar's to its
        stream, without breaking the bar."""
        if self.disable or (final and not self.summary):
            return
        from tqdm import tqdm

        widget = self.bar is not None and getattr(self.bar, "container", None) is not None
        # A widget bar writes nothing to a stream: the line goes where the cell prints.
        stream = sys.stdout if widget else (self.file if self.file is not None
                                            else sys.stderr)
        tqdm.write(text, file=stream)


# The console bar's colour per outcome (tqdm's ``colour``: a name or #hex).
_TERMINAL_COLOURS = {"success": "green", "warning": "yellow", "danger": "red"}


def postfix_for(counters: SeedCounters) -> dict[str, int | str]:
    """The bar's live counts; tokens (and cost) once the backend reports them."""
    postfix: dict[str, int | str] = {
        "ok": counters.successful, "failed": counters.failed, "skipped": counters.skipped,
        "retries": counters.retries, "triples": counters.triples}
    if counters.window is not None:  # the service caps requests in flight: how many now
        postfix["in flight"] = counters.window
    if counters.prompt_tokens is not None:
        postfix["tokens"] = counters.prompt_tokens + (counters.completion_tokens or 0)
    if counters.cost is not None:
        postfix["cost"] = format_cost(counters.cost)
    return postfix
