"""The run-session layer: readiness before any file, closing, stop and resume, progress."""

from __future__ import annotations

import asyncio
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import API_KEY, conversation
from memori_nb import Memori, SeedData
import memori_nb.session
from memori_nb.errors import (ConfigurationError, MissingApiKeyError, RunInterrupted,
                              StoreError)
from memori_nb.notebook import seed_dataframe
from memori_nb.progress import TqdmProgress
from memori_nb.testing import AugmentationServer


def seeds(n: int, entity: str = "u1") -> SeedData:
    return SeedData.for_conversations(entity_id=entity, conversations=[
        conversation(f"c{i}", f"I live in City{i} and I have a dog named Rex{i}.", "Nice!")
        for i in range(n)])


class Notes:
    """A progress display that keeps what it is told, as a panel or a bar would show it."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, bool]] = []
        self.processed = 0

    def start(self, counters) -> None: ...

    def update(self, counters, result) -> None:
        self.processed = counters.processed

    def close(self, counters) -> None:
        self.outcome = counters.outcome

    def note(self, text: str, *, final: bool = False) -> None:
        self.notes.append((text, final))


def test_a_run_refused_for_a_missing_key_makes_no_database_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    path = tmp_path / "memori.duckdb"
    m = Memori(conn=str(path))  # the default backend, "memori"
    with pytest.raises(MissingApiKeyError, match="MEMORI_API_KEY"):
        asyncio.run(m.seed(seeds(2)))
    m.close()
    assert not path.exists()
    assert "conn='" in repr(m) and str(path) in repr(m)


def test_async_with_closes_the_backend_it_made_but_not_one_passed_in(server, tmp_path):
    from memori_nb.backends import MemoriBackend

    async def go():
        async with Memori(conn=str(tmp_path / "a.duckdb"), backend="memori", api_key=API_KEY,
                          base_url=server.url) as made:
            result = await made.seed(seeds(3), progress=False)
        mine = MemoriBackend(api_key=API_KEY, base_url=server.url)
        async with Memori(conn=str(tmp_path / "b.duckdb"), backend=mine) as borrowing:
            await borrowing.seed(seeds(3), progress=False)
        again = await Memori(conn=":memory:", backend=mine).seed(seeds(2), progress=False)
        await mine.aclose()
        return result, made, again

    result, made, again = asyncio.run(go())
    assert result.successful == 3 and again.successful == 2  # the borrowed one still sends
    with pytest.raises(Exception):
        made.results()  # its store is closed


def test_stop_from_another_thread_returns_the_partial_result_and_a_rerun_resumes(tmp_path):
    path = str(tmp_path / "memori.duckdb")
    data = seeds(40)
    sink = Notes()
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        m = Memori(conn=path, backend="memori", api_key=API_KEY, base_url=server.url)

        def stop_after_some() -> None:
            while sink.processed < 8:
                time.sleep(0.01)
            assert m.stop()

        stopper = threading.Thread(target=stop_after_some)
        stopper.start()
        partial = asyncio.run(m.seed(data, batch_size=4, progress=sink))
        stopper.join()
        sent_first = server.request_count
        assert partial.stopped_reason == "interrupted"
        assert 8 <= partial.successful < 40
        assert sink.outcome == "warning"  # amber, not red: a stop is not an error
        assert sink.notes[-1] == (f"Interrupted: seeded {partial.total} conversations in "
                                  f"{partial.duration_ms / 1000:.1f} s: {partial.successful} "
                                  f"succeeded; {partial.total_triples} triples (run "
                                  f"{partial.run_id}). Run again to continue: what finished is "
                                  f"skipped", True)
        assert m.last_result is partial and not m.stop()  # nothing running now
        assert m.runs().status[0] == "interrupted"

        again = Notes()
        resumed = asyncio.run(m.seed(data, batch_size=4, progress=again))
        m.close()
    left = 40 - partial.successful
    assert again.notes[0] == (f"Resuming: {partial.successful} already seeded, "
                              f"{left} to send", False)
    assert resumed.successful == left and resumed.skipped == partial.successful
    assert server.request_count == sent_first + left
    assert f"{left} succeeded, {partial.successful} already seeded" in again.notes[-1][0]


def test_seed_dataframe_interrupted_in_a_running_loop_says_so_and_keeps_what_finished(
        tmp_path):
    # As in a kernel: the cell's thread runs a loop, the kernel's Interrupt is a SIGINT.
    frame = pd.DataFrame([(f"c{i}", role, text) for i in range(60) for role, text in
                          (("user", f"I live in City{i}."), ("assistant", "Nice!"))],
                         columns=["conversation_id", "role", "content"])
    path = str(tmp_path / "memori.duckdb")
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        async def cell():
            return seed_dataframe(frame, db=path, backend="memori", api_key=API_KEY,
                                  base_url=server.url, batch_size=4, entity_id="u1",
                                  progress=False)

        loop = asyncio.new_event_loop()
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Timer(0.4, signal.raise_signal, (signal.SIGINT,))
        timer.start()
        try:
            with pytest.raises(RunInterrupted) as stopped:
                loop.run_until_complete(cell())
        finally:
            timer.cancel()
            loop.close()
            signal.signal(signal.SIGINT, previous)
    partial = stopped.value.result
    assert stopped.value._render_traceback_() == [str(stopped.value)]  # one line, in Jupyter
    assert str(stopped.value).startswith(f"Interrupted: seeded {partial.total} conversations")
    assert 0 < len(stopped.value.results) == partial.total < 60
    assert set(stopped.value.results.status) == {"succeeded"}
    assert Memori(conn=path, backend="local").runs().status[0] == "interrupted"


def test_cancellations_the_session_did_not_ask_for_stay_cancellations(server, monkeypatch):
    # Even in a kernel: a timeout around a seed is the caller's, not a stop.
    monkeypatch.setattr("memori_nb.session._in_kernel", lambda: True)
    slow = AugmentationServer(api_key=API_KEY, latency=0.2)

    async def go():
        m = Memori(conn=":memory:", backend="memori", api_key=API_KEY, base_url=slow.url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await m.seed(seeds(40), batch_size=2, progress=False)
        assert m.runs().status[0] == "interrupted"  # what finished was saved all the same
        await m.aclose()

    with slow:
        asyncio.run(go())


def test_stop_twice_or_too_late_does_no_harm(server):
    async def go():
        m = Memori(conn=":memory:", backend="memori", api_key=API_KEY, base_url=server.url)
        sink = Notes()

        def stop_twice(n, total, result):
            if n == 3:
                assert m.stop() and m.stop()

        partial = await m.seed(seeds(30), batch_size=2, progress=stop_twice)
        whole = await m.seed(seeds(3, "u2"), progress=sink)
        late = m._running  # nothing running: a stop now is refused, not kept for later
        refused = m.stop()
        await asyncio.sleep(0.05)  # a late cancel would land here
        return partial, whole, late, refused

    partial, whole, late, refused = asyncio.run(go())
    assert partial.stopped_reason == "interrupted" and partial.successful < 30
    assert whole.successful == 3 and late is None and refused is False


def test_a_run_after_a_crashed_one_says_it_resumes(tmp_path, server):
    path = str(tmp_path / "memori.duckdb")
    m = Memori(conn=path, backend="memori", api_key=API_KEY, base_url=server.url)
    asyncio.run(m.seed(seeds(5), progress=False))
    m.close()
    # As a killed process leaves it: the run's row still says running, under a dead pid.
    import duckdb

    conn = duckdb.connect(path)
    conn.execute("UPDATE runs SET status = 'running', pid = 999999999")
    conn.close()
    again = Notes()
    m = Memori(conn=path, backend="memori", api_key=API_KEY, base_url=server.url)
    asyncio.run(m.seed(seeds(8), progress=again))
    m.close()
    assert again.notes[0] == ("Resuming: 5 already seeded, 3 to send", False)


def test_a_bar_made_for_a_run_that_cannot_begin_is_closed(tmp_path, monkeypatch):
    path = tmp_path / "broken.duckdb"
    path.write_text("not a database")
    bars = []
    made = memori_nb.session.progress_bar
    monkeypatch.setattr(memori_nb.session, "progress_bar",
                        lambda data: bars.append(made(data)) or bars[-1])
    m = Memori(conn=str(path), backend="local")
    with pytest.raises(StoreError):
        asyncio.run(m.seed(seeds(2), progress=True))
    [bar] = bars
    assert bar.bar.disable and bar.bar.colour == "red"  # closed, and red: nothing began


def test_progress_is_one_argument(monkeypatch, capsys):
    seen = []
    m = Memori(conn=":memory:", backend="local")
    result = asyncio.run(m.seed(seeds(3), progress=lambda n, total, r: seen.append(n)))
    assert result.successful == 3 and seen == [1, 2, 3]
    compat = asyncio.run(m.seed(seeds(2, "u2"), on_progress=lambda *a: seen.append(a[0])))
    assert compat.successful == 2 and seen[-2:] == [1, 2]
    with pytest.raises(ConfigurationError, match="one of on_progress= and progress="):
        asyncio.run(m.seed(seeds(1), on_progress=print, progress=False))
    with pytest.raises(ConfigurationError, match="progress must be"):
        asyncio.run(m.seed(seeds(1), progress="yes"))
    m.close()


def test_a_bar_by_default_on_a_terminal_and_none_when_piped(monkeypatch, capsys):
    m = Memori(conn=":memory:", backend="local")
    asyncio.run(m.seed(seeds(3)))  # pytest's stderr is not a terminal: no bar
    assert capsys.readouterr().err == ""

    class Terminal(queue.SimpleQueue):
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            self.put(text)
            return len(text)

        def flush(self) -> None: ...

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    asyncio.run(m.seed(seeds(3, "u2")))
    m.close()
    drawn = "".join(iter(lambda: terminal.get() if not terminal.empty() else None, None))
    assert "3/3" in drawn and "Seeded 3 conversations" in drawn


def test_tqdm_progress_notes_go_under_the_bar(capsys):
    bar = TqdmProgress("seeding", notebook=False)
    bar.open(2)
    bar.note("Resuming: 1 already seeded, 1 to send")
    bar.note("Seeded 1 conversation", final=True)
    bar.bar.close()
    quiet = TqdmProgress("seeding", notebook=False, summary=False)
    quiet.open(1)
    quiet.note("Seeded 1 conversation", final=True)
    quiet.bar.close()
    err = capsys.readouterr().err
    assert "Resuming: 1 already seeded, 1 to send" in err
    assert err.count("Seeded 1 conversation") == 1


def test_seed_in_a_real_kernel_interrupted_says_one_line_and_keeps_the_result(tmp_path):
    """Jupyter's Interrupt on ``await m.seed(...)`` in a loop: the cell stops with one line and
    no traceback, and the partial result is kept on the session."""
    jupyter_client = pytest.importorskip("jupyter_client")
    path = tmp_path / "memori.duckdb"
    with AugmentationServer(api_key=API_KEY, latency=0.05) as server:
        km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3",
                                                         cwd=str(tmp_path))
        try:
            setup = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
                     "from memori_nb import Memori, SeedData\n"
                     f"m = Memori(conn={str(path)!r}, backend='memori', api_key={API_KEY!r}, "
                     f"base_url={server.url!r})\n"
                     "data = SeedData.for_conversations(entity_id='u1', conversations=[\n"
                     "    {'id': f'c{i}', 'messages': [{'role': 'user', 'content': "
                     "f'I live in City{i}.'}]} for i in range(400)])\n")
            assert kc.execute_interactive(setup, timeout=60)["content"]["status"] == "ok"
            msg_id = kc.execute("for part in (data, data):\n"
                                "    result = await m.seed(part, batch_size=2)\n"
                                "    print('went on')")
            while server.request_count < 6:
                time.sleep(0.02)
            km.interrupt_kernel()
            outputs, errors = [], []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    message = kc.get_iopub_msg(timeout=1)
                except queue.Empty:
                    continue
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = message["msg_type"]
                if kind == "stream":
                    outputs.append(message["content"]["text"])
                elif kind == "error":
                    errors.append((message["content"]["ename"],
                                   message["content"]["traceback"]))
                elif kind == "status" and message["content"]["execution_state"] == "idle":
                    break
            kept = kc.execute_interactive(
                "print('kept', m.last_result.stopped_reason, m.last_result.successful)",
                timeout=30, output_hook=lambda msg: outputs.append(
                    msg["content"].get("text", "")))
            assert kept["content"]["status"] == "ok"
            sent = server.request_count
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    text = "".join(outputs)
    [(name, lines)] = errors  # the cell stopped: the loop did not go on to a second seed
    assert name == "RunInterrupted" and len(lines) == 1
    assert lines[0].startswith("Interrupted: seeded") and "Run again to continue" in lines[0]
    assert "went on" not in text and "Traceback" not in text
    assert "kept interrupted" in text and sent < 400


def test_planning_makes_no_database_file(tmp_path):
    path = tmp_path / "memori.duckdb"
    m = Memori(conn=str(path), backend="local")
    assert m.plan(seeds(3)).to_send == 3
    m.close()
    assert not path.exists()
