"""An ipywidgets panel for seeding a loaded dataset from a notebook: look, dry-run, run, stop.

:func:`seed_panel` (or :class:`SeedPanel`) shows the chunking statistics of a DataFrame or a
list of :class:`~memori_nb.models.SeedData`, lets you pick the backend, the concurrency and the
request limits, and runs the seeding **without blocking the kernel**: Run schedules the
seeding as a task on the kernel's own event loop, so the Stop button (and any other cell)
still works while it runs. Stopping saves every finished conversation; running again skips
them, so a stopped run continues where it left off. After a run, its failures (first) and
results are shown a page at a time (``panel.failures_pager``, ``panel.results_pager``).

ipywidgets is imported only when a panel is built, so ``import memori_nb`` stays light.

Example (in a notebook cell)::

    from memori_nb.panel import seed_panel
    panel = seed_panel(df, db="memori.duckdb")
    panel          # shows the panel; click Dry run, then Run
"""

from __future__ import annotations

import asyncio
import html
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .backends import BACKEND_NAMES, resolve_backend
from .client import Memori
from .errors import ConfigurationError, MissingApiKeyError
from .sources import to_seeds
from .stats import chunking_stats, stats_totals
from .models import (INTERRUPTED, ConversationResult, SeedConfig, SeedCounters, SeedData,
                     SeedResult, short_reason)
from .plan import Plan
from .pager import TablePager
from .pricing import describe_usage
from .session import describe_result
from .stores import DEFAULT_DB
from .wording import plural

__all__ = ["SeedPanel", "WidgetProgress", "seed_panel"]

#: Widget refreshes per second at most while a run is in progress.
UPDATES_PER_SECOND = 10
#: Rows of the per-entity and results tables drawn in the panel (the frames keep them all).
MAX_TABLE_ROWS = 20
#: Upper bound of the batch-size slider (concurrent requests).
MAX_BATCH_SIZE = 100

# Widget HTML does not get the notebook's DataFrame styling: a little of our own.
_TABLE_STYLE = ("<style>.memori-nb-table{border-collapse:collapse;margin:2px 0 8px;"
                "font-size:12px}.memori-nb-table th,.memori-nb-table td{padding:2px 8px;"
                "text-align:right;border-bottom:1px solid #ddd}"
                ".memori-nb-table th{font-weight:600}</style>")
# "reason", not "error": the error repeats the conversation's name, pushing why out of sight.
_RESULT_COLUMNS = ["entity_id", "conversation_id", "status", "reason", "triples_count",
                   "chunks_processed", "duration_ms"]
# Shown only when the run has them (a backend that bills by token).
_TOKEN_COLUMNS = ["prompt_tokens", "completion_tokens", "cost"]


class WidgetProgress:
    """A progress sink (the engine's ``ProgressSink``) that drives ipywidgets.

    Updates an ``IntProgress`` and an ``HTML`` label with succeeded / failed / skipped /
    retries / triples, the rate, the time elapsed and (with a known total) the time left, at
    most ``UPDATES_PER_SECOND`` times a second (every widget change is a message to the
    browser), and always once more when the run closes.

    Args:
        bar: an ``ipywidgets.IntProgress``.
        label: an ``ipywidgets.HTML`` (or anything with a ``value``) for the counts.
        interval: seconds between refreshes.
        clock: the time source (injectable for tests).
        notes: an ``ipywidgets.HTML`` for a line about the run before it ends (that it
            resumes an earlier one); the panel writes how it ended itself.
    """

    def __init__(self, bar: Any, label: Any, *, interval: float = 1 / UPDATES_PER_SECOND,
                 clock: Any = time.monotonic, notes: Any = None) -> None:
        self.bar, self.label, self.interval, self.clock = bar, label, interval, clock
        self.notes = notes
        self.counters: SeedCounters | None = None
        self.refreshes = 0
        self._last = float("-inf")
        self._started: float | None = None

    def start(self, counters: SeedCounters) -> None:
        self.counters = counters
        self._started = self.clock()
        self.bar.bar_style = "info"
        self.bar.value = 0
        self.bar.max = max(counters.total or 0, 1)
        self._refresh(counters)

    def update(self, counters: SeedCounters, result: ConversationResult) -> None:
        self.counters = counters
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._refresh(counters)

    def close(self, counters: SeedCounters) -> None:
        self.counters = counters
        self._refresh(counters, final=True)
        # Green only when nothing failed; amber when some failed or the run was stopped;
        # red when all failed or it stopped on an error.
        self.bar.bar_style = counters.outcome

    def note(self, text: str, *, final: bool = False) -> None:
        if self.notes is not None and not final:
            self.notes.value = f"<span>{html.escape(text)}</span>"

    def _refresh(self, counters: SeedCounters, *, final: bool = False) -> None:
        self.refreshes += 1
        if counters.processed > self.bar.max:  # a streamed source had no total
            self.bar.max = counters.processed
        self.bar.value = counters.processed
        elapsed = self.clock() - self._started if self._started is not None else None
        self.label.value = describe_counters(counters, elapsed=elapsed, final=final)


def describe_counters(counters: SeedCounters, *, elapsed: float | None = None,
                      final: bool = False) -> str:
    """The live counts as one line of HTML; with ``elapsed`` (seconds since the run began),
    the rate, the time elapsed and, when the total is known and the run not ``final``
    (ended, or stopped), an estimate of the time left."""
    total = f"{counters.total:,}" if counters.total is not None else "?"
    usage = describe_usage(counters.prompt_tokens, counters.completion_tokens, counters.cost)
    text = (f"<b>{counters.processed:,}/{total}</b> conversations &middot; "
            f"{counters.successful:,} succeeded &middot; {counters.failed:,} failed &middot; "
            f"{counters.skipped:,} skipped &middot; "
            f"{plural(counters.retries, 'retry', 'retries')} &middot; "
            f"{plural(counters.triples, 'triple')}" + (f" &middot; {usage}" if usage else ""))
    if elapsed is None or elapsed <= 0:
        return text
    rate = counters.processed / elapsed
    text += f"<br>{rate:,.1f} conv/s &middot; {_clock(elapsed)} elapsed"
    left = (counters.total or 0) - counters.processed
    if counters.total is not None and left > 0 and rate > 0 and not final:
        text += f" &middot; about {_clock(left / rate)} left"
    return text


def _clock(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class SeedPanel:
    """A notebook panel to size up, run and stop the seeding of a loaded dataset.

    Evaluate the panel in a cell to show it. Everything the buttons do is also a method, so
    the panel can be driven from code (and tested without a browser): :meth:`dry_run`,
    :meth:`run` (returns the asyncio task), :meth:`stop`, and ``await`` :meth:`run_async`.

    Args:
        data: a DataFrame (read with :func:`memori_nb.from_dataframe`), a :class:`SeedData`
            or a list of them.
        db: DuckDB file path, ``":memory:"`` (kept open for the panel's life, so a stopped
            run can continue) or an open connection.
        backend: ``"local"``, ``"memori"`` or a backend object; default ``"memori"`` when an
            API key is available, else ``"local"``.
        api_key, base_url: for the ``memori`` backend (default: the environment variables).
        seed_config: the starting limits and retries (``SeedConfig()`` by default); the
            panel's controls override batch size and the per-request limits.
        **from_dataframe_kwargs: column names and ``entity_id=`` when ``data`` is a frame.

    Attributes:
        seeds: the loaded ``list[SeedData]``.
        stats: per-conversation chunking statistics of the last dry run.
        backend, batch_size, max_messages, max_chars, force: the control widgets.
        dry_run_button, run_button, stop_button: the buttons.
        progress, counters, status: the live progress bar, counts label and status line.
        stats_html, backend_hint: the statistics and the backend hint (HTML widgets).
        output: an Output widget with the failures and results of the last run.
        failures_pager, results_pager: those tables, a page at a time (``.next()``,
            ``.previous()``, ``.page = 3``); see :class:`memori_nb.pager.TablePager`.
        result, results, failures: the last run's SeedResult and its DataFrames.
        error: the exception that ended the last run, if any.
        widget: the whole panel (a ``VBox``).

    Raises:
        InvalidInputError: ``data`` is not usable (see :func:`memori_nb.from_dataframe`).

    Example:
        >>> import asyncio, pandas as pd
        >>> frame = pd.DataFrame({"entity_id": ["u1", "u1"], "conversation_id": ["c1", "c1"],
        ...                       "role": ["user", "assistant"],
        ...                       "content": ["I live in Oslo.", "Nice!"]})
        >>> panel = SeedPanel(frame, db=":memory:", backend="local")
        >>> int(panel.dry_run()["requests"].sum())
        1
        >>> async def click_run():
        ...     return await panel.run()
        >>> asyncio.run(click_run()).successful
        1
    """

    def __init__(self, data: pd.DataFrame | SeedData | Sequence[SeedData], *,
                 db: str | Path | duckdb.DuckDBPyConnection = DEFAULT_DB,
                 backend: Any = None, api_key: str | None = None, base_url: str | None = None,
                 seed_config: SeedConfig | None = None, **from_dataframe_kwargs: Any) -> None:
        import ipywidgets as widgets

        self.seeds = list(to_seeds(data, **from_dataframe_kwargs))
        # A fresh ":memory:" database per run would forget the ledger: keep one open.
        self._db = duckdb.connect(":memory:") if str(db) == ":memory:" else db
        self.api_key, self.base_url = api_key, base_url
        self.seed_config = seed_config or SeedConfig()
        self.stats: pd.DataFrame | None = None
        self.result: SeedResult | None = None
        self.results: pd.DataFrame | None = None
        self.failures: pd.DataFrame | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None
        self.sink: WidgetProgress | None = None
        self.memori: Memori | None = None  # the session of the run in progress
        # The last run's failures and results a page at a time (None before a run, or when
        # none failed): ``panel.results_pager.next()`` is a click on its Next button.
        self.failures_pager: TablePager | None = None
        self.results_pager: TablePager | None = None

        # Why the memori backend could not send (no key, a malformed key or URL), if so.
        self._memori_problem, memori_label = None, "memori"
        try:
            resolve_backend("memori", api_key=api_key, base_url=base_url).check_ready()
        except MissingApiKeyError as exc:
            self._memori_problem, memori_label = str(exc), "memori (needs MEMORI_API_KEY)"
        except ConfigurationError as exc:
            self._memori_problem, memori_label = str(exc), "memori (key or URL unusable)"
        options: list[tuple[str, Any]] = [("local (offline)", "local"),
                                          (memori_label, "memori")]
        if backend is not None and not isinstance(backend, str):
            self._custom_backend = backend
            options.append((f"custom: {getattr(backend, 'name', type(backend).__name__)}",
                            "custom"))
            default = "custom"
        else:
            if backend not in (None, *BACKEND_NAMES):
                raise ConfigurationError(f"unknown backend {backend!r}; use one of "
                                         f"{', '.join(BACKEND_NAMES)} or a backend object")
            self._custom_backend = None
            default = backend or ("local" if self._memori_problem else "memori")
        self._busy = self._finishing = False
        style = {"description_width": "initial"}
        self.backend = widgets.Dropdown(options=options, value=default,
                                        description="Backend:", style=style)
        self.backend_hint = widgets.HTML()
        self.batch_size = widgets.IntSlider(
            value=min(self.seed_config.batch_size, MAX_BATCH_SIZE), min=1, max=MAX_BATCH_SIZE,
            description="Batch size:", style=style, continuous_update=False)
        self.max_messages = widgets.BoundedIntText(
            value=self.seed_config.max_messages_per_request, min=1, max=10**9,
            description="Max messages / request:", style=style)
        self.max_chars = widgets.BoundedIntText(
            value=self.seed_config.max_chars_per_request, min=1, max=10**12,
            description="Max chars / request:", style=style)
        self.force = widgets.Checkbox(value=False, description="Force re-send",
                                      tooltip="Send again conversations already seeded "
                                              "with the same content", indent=False)
        self.dry_run_button = widgets.Button(description="Dry run", icon="calculator",
                                             tooltip="Recompute the statistics with these "
                                                     "limits; sends nothing")
        self.run_button = widgets.Button(description="Run", icon="play",
                                         button_style="primary")
        self.stop_button = widgets.Button(description="Stop", icon="stop",
                                          button_style="danger", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=max(self._total(), 1),
                                            description="Seeding:", style=style)
        self.counters = widgets.HTML()
        self.status = widgets.HTML()
        self.stats_html = widgets.HTML()
        self.output = widgets.Output()

        self.dry_run_button.on_click(lambda _: self.dry_run())
        self.run_button.on_click(lambda _: self._run_clicked())
        self.stop_button.on_click(lambda _: self.stop())
        self.backend.observe(lambda _: self._backend_changed(), names="value")

        self._controls = [self.backend, self.batch_size, self.max_messages, self.max_chars,
                          self.force, self.dry_run_button]
        self.widget = widgets.VBox([
            widgets.HTML(f"<h3 style='margin:0'>Seed "
                         f"{plural(len(self.seeds), 'entity', 'entities')}, "
                         f"{plural(self._total(), 'conversation')}</h3>"),
            self.stats_html,
            widgets.HBox([self.backend, self.backend_hint]),
            widgets.HBox([self.batch_size, self.force]),
            widgets.HBox([self.max_messages, self.max_chars]),
            widgets.HBox([self.dry_run_button, self.run_button, self.stop_button]),
            widgets.HBox([self.progress, self.counters]),
            self.status,
            self.output,
        ])
        self._backend_changed()
        self._show_stats(chunking_stats(self.seeds, self.seed_config,
                                        backend=self._estimating_backend()), dry_run=False)

    # --- display --------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return (f"<SeedPanel {plural(len(self.seeds), 'entity', 'entities')}, "
                f"{plural(self._total(), 'conversation')}, "
                f"{'running' if self.running else 'idle'}>")

    # --- actions --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while a run's task is in progress."""
        return self.task is not None and not self.task.done()

    def config(self) -> SeedConfig:
        """The :class:`SeedConfig` the controls describe.

        Raises:
            ConfigurationError: a control holds an unusable value.
        """
        fields = {name: getattr(self.seed_config, name)
                  for name in self.seed_config.__dataclass_fields__}
        fields.update(batch_size=int(self.batch_size.value),
                      max_messages_per_request=int(self.max_messages.value),
                      max_chars_per_request=int(self.max_chars.value))
        return SeedConfig(**fields)

    def dry_run(self) -> pd.DataFrame:
        """Plan the run with the chosen backend, limits and database, and show the plan:
        how many conversations are to send, already seeded or invalid, the requests, ETA,
        cost and what would stop the run (no API key), above the statistics.

        Sends nothing and writes nothing. The plan itself is kept as ``self.plan``.

        Returns:
            The per-conversation statistics (see :func:`memori_nb.chunking_stats`), with
            the plan's ``status`` column.
        """
        try:
            config = self.config()
            # Trying the server's address takes up to a few seconds when it does not answer.
            self.plan = self._memori().plan(self.seeds, seed_config=config,
                                            force=bool(self.force.value), reach=True)
        except Exception as exc:  # noqa: BLE001 - shown to the person clicking
            self._set_status(f"Cannot plan: {exc}", "error")
            raise
        self._show_stats(self.plan.stats, dry_run=True, config=config, plan=self.plan)
        return self.plan.stats

    def _estimating_backend(self) -> Any:
        """The chosen backend object, whose prompt overhead and prices the statistics
        estimate tokens and cost with; None for the named ones (they do not bill by
        token)."""
        return self._custom_backend if self.backend.value == "custom" else None

    def run(self) -> asyncio.Task:
        """Start seeding as a task on the running event loop and return the task.

        In a notebook the kernel's loop is running, so the cell (or button click) returns at
        once and the panel updates while the run goes on; :meth:`stop` cancels it. Await the
        task for the :class:`SeedResult` (None when stopped or failed; see ``error``).

        Raises:
            RuntimeError: a run is already in progress, or no event loop is running (in a
                script, use ``asyncio.run(panel.run_async())``).
        """
        if self.running:
            raise RuntimeError("a run is already in progress; click Stop (panel.stop()) first")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("SeedPanel.run() needs a running event loop, as in a Jupyter "
                               "kernel; in a script use asyncio.run(panel.run_async())") from None
        self.task = loop.create_task(self.run_async(), name="memori_nb-panel-seed")
        return self.task

    def stop(self) -> bool:
        """Stop the run in progress. Finished conversations are saved; run again to go on.

        Returns:
            True if a run was stopped, False if none was running.
        """
        if not self.running or self._finishing:  # nothing to stop, or only cleaning up
            return False
        if not self._busy or self.memori is None or not self.memori.stop():
            self.task.cancel()  # cancelled before it started: nothing was sent
            self._set_status("stopped before it started — nothing was sent", "warning")
            return True
        self.stop_button.disabled = True
        self._set_status("stopping — saving finished conversations …", "info")
        return True

    async def run_async(self) -> SeedResult | None:
        """Seed with the chosen settings, updating the panel; the coroutine behind Run.

        Returns:
            The :class:`SeedResult`, or None when the run was stopped or failed (the
            exception is in ``error`` and on the status line).
        """
        self.error, self.result, self._finishing = None, None, False
        try:
            config = self.config()
            memori = self._memori()
            memori.backend_ready(config)  # refused here, with the reason on the status line
        except Exception as exc:  # noqa: BLE001 - shown on the panel
            self.error = exc
            self._set_status(f"Cannot start: {exc}", "error")
            return None
        self._set_running(True)
        self.output.outputs = ()
        self._set_status(f"running with backend {self.backend.label!r} …", "info")
        self.sink = WidgetProgress(self.progress, self.counters, notes=self.status)
        self.memori = memori
        stopped = False
        try:
            self.result = await memori.seed(self.seeds, seed_config=config,
                                            force=bool(self.force.value), progress=self.sink,
                                            keep_results=False)
            stopped = self.result.stopped_reason == INTERRUPTED
        except asyncio.CancelledError:  # stopped before the run began: nothing was sent
            stopped = True
        except Exception as exc:  # noqa: BLE001 - a kernel task has nobody else to tell
            self.error = exc
        self._finishing = True
        try:
            self._show_results(memori, stopped)
        finally:
            self.memori = None
            self._set_running(False)
            await memori.aclose()  # a backend object passed in stays open
        return None if stopped else self.result

    # --- internals ------------------------------------------------------------------------

    def _run_clicked(self) -> None:
        try:
            self.run()
        except RuntimeError as exc:
            self._set_status(str(exc), "error")

    def _memori(self) -> Memori:
        choice = self.backend.value
        backend = self._custom_backend if choice == "custom" else choice
        return Memori(conn=self._db, backend=backend, api_key=self.api_key,
                      base_url=self.base_url)

    def _total(self) -> int:
        return sum(seed.size or 0 for seed in self.seeds)

    def _backend_changed(self) -> None:
        cannot_send = self.backend.value == "memori" and self._memori_problem
        self.run_button.disabled = bool(cannot_send) or self._busy
        self.backend_hint.value = (
            f"<span style='color:#b45309'>{html.escape(self._memori_problem)}. Choose "
            f"<i>local</i> to run offline.</span>" if cannot_send else "")

    def _set_running(self, running: bool) -> None:
        self._busy = running
        for control in self._controls:
            control.disabled = running
        self.stop_button.disabled = not running
        if running:
            self.run_button.disabled = True
        else:
            self._backend_changed()

    def _set_status(self, text: str, kind: str = "info") -> None:
        color = {"error": "#b91c1c", "warning": "#b45309", "success": "#15803d"}.get(kind, "")
        style = f" style='color:{color}'" if color else ""
        self.status.value = f"<span{style}>{html.escape(text)}</span>"

    def _show_stats(self, stats: pd.DataFrame, *, dry_run: bool,
                    config: SeedConfig | None = None, plan: Plan | None = None) -> None:
        self.stats = stats
        overall = stats_totals(stats, by=None)
        per_entity = stats_totals(stats)
        parts = []
        if dry_run and config is not None and plan is not None:
            # The plan (counts, ETA, cost, warnings) above the statistics it adds up.
            parts.append(
                f"<p><b>Dry run</b> with at most {config.max_messages_per_request:,} messages "
                f"and {config.max_chars_per_request:,} characters per request. "
                f"Nothing was sent.</p>")
            parts.append(plan._repr_html_())
        parts.append(_table(overall, "Totals"))
        parts.append(_table(per_entity, "Per entity"))
        invalid = stats[stats["error"].notna()]
        if len(invalid):
            reasons = [short_reason(error, cid) for error, cid in
                       zip(invalid["error"], invalid["conversation_id"])]
            parts.append(_table(invalid[["entity_id", "conversation_id"]].assign(
                reason=reasons), "Invalid conversations (they will fail without being sent)"))
        self.stats_html.value = _TABLE_STYLE + "".join(parts)

    def _show_results(self, memori: Memori, stopped: bool) -> None:
        store = memori.store
        run_id = self.result.run_id if self.result is not None else store.latest_run_id()
        self.results = store.results(run_id) if run_id else None
        self.failures = store.failures(run_id) if run_id else None
        counters = self.sink.counters if self.sink is not None else None
        if stopped:
            saved = counters.successful if counters else 0
            self._set_status(f"stopped — {plural(saved, 'conversation')} saved; Run again to "
                             f"continue", "warning")
        elif self.error is not None:
            self.progress.bar_style = "danger"
            self._set_status(f"failed: {type(self.error).__name__}: {self.error}", "error")
        else:
            self._set_status(describe_result(self.result),
                             "warning" if self.result.failed else "success")
        # Failures first, each with its short reason; then every result, failed, succeeded
        # and skipped in that order (as the store lists them), skipped ones saying why.
        # Each is a pager, so every row can be reached from the panel, not just the first.
        for old in (self.failures_pager, self.results_pager):
            if old is not None:
                old.close()  # its widgets would otherwise live as long as the kernel
        self.failures_pager = self.results_pager = None
        if self.failures is not None and len(self.failures):
            self.failures_pager = _pager(self.failures[["entity_id", "conversation_id",
                                                        "reason"]],
                                         f"Failures ({len(self.failures):,})")
        if self.results is not None and len(self.results):
            columns = _RESULT_COLUMNS + [c for c in _TOKEN_COLUMNS if c in self.results.columns
                                         and self.results[c].notna().any()]
            shown = self.results[[c for c in columns if c in self.results.columns]]
            self.results_pager = _pager(shown,
                                        f"Results ({plural(len(shown), 'conversation')})")
        self.output.outputs = tuple(_widget_output(pager) for pager in
                                    (self.failures_pager, self.results_pager) if pager)


def _table(frame: pd.DataFrame, title: str) -> str:
    more = len(frame) - MAX_TABLE_ROWS
    shown = frame.head(MAX_TABLE_ROWS).copy()
    for column in shown.columns:
        if column in ("cost", "estimated_cost"):  # dollars: fractions of a cent matter
            shown[column] = shown[column].round(4)
        elif shown[column].dtype.kind == "f":
            shown[column] = shown[column].round(1)
        elif shown[column].dtype == object:  # None would print as "None"
            shown[column] = shown[column].where(shown[column].notna(), "")
    # A class of its own per table, so the rule aligning its prose columns hits only them.
    own = f"memori-nb-{uuid.uuid4().hex[:12]}"
    body = shown.to_html(index=False, border=0, na_rep="",
                         classes=["memori-nb-table", own])
    note = f"<p><i>… and {more:,} more rows</i></p>" if more > 0 else ""
    return f"{_prose_left(shown, own)}<p><b>{html.escape(title)}</b></p>{body}{note}"


#: Columns of sentences: they read from the left (ids and numbers stay right-aligned), or
#: a wrapped reason shows a ragged left edge.
_PROSE_COLUMNS = ("reason", "error")


def _prose_left(frame: pd.DataFrame, table_class: str) -> str:
    """A style left-aligning the prose columns of one table (nothing when it has none)."""
    cells = [f".{table_class} th:nth-child({n}),.{table_class} td:nth-child({n})"
             for n, column in enumerate(frame.columns, start=1) if column in _PROSE_COLUMNS]
    return f"<style>{','.join(cells)}{{text-align:left}}</style>" if cells else ""


def _pager(frame: pd.DataFrame, title: str) -> TablePager:
    """A pager of MAX_TABLE_ROWS rows a page, drawn in the panel's table style."""
    return TablePager(frame, title=title, page_size=MAX_TABLE_ROWS,
                      render=lambda rows, title: _TABLE_STYLE + _table(rows, title))


def _widget_output(pager: TablePager) -> dict[str, Any]:
    """An Output-widget display item showing the pager's live widget (as ``display()``
    inside ``with output:`` would add, but set directly: works with or without a kernel).
    The text stands in where widgets cannot be drawn."""
    bundle = pager.widget._repr_mimebundle_()
    text = (f"{pager.title}: {pager.describe()} (every row is in panel.results and "
            f"panel.failures)")
    return {"output_type": "display_data",
            "data": {"application/vnd.jupyter.widget-view+json":
                     bundle["application/vnd.jupyter.widget-view+json"],
                     "text/plain": text},
            "metadata": {}}


def seed_panel(data: pd.DataFrame | SeedData | Sequence[SeedData], *,
               db: str | Path | duckdb.DuckDBPyConnection = DEFAULT_DB, backend: Any = None,
               api_key: str | None = None, base_url: str | None = None,
               seed_config: SeedConfig | None = None,
               **from_dataframe_kwargs: Any) -> SeedPanel:
    """Build a :class:`SeedPanel` for a DataFrame or a list of SeedData; show it as a cell's value.

    Args: as :class:`SeedPanel`.

    Example (in a notebook)::

        seed_panel(df, db="memori.duckdb", backend="local")
    """
    return SeedPanel(data, db=db, backend=backend, api_key=api_key, base_url=base_url,
                     seed_config=seed_config, **from_dataframe_kwargs)
