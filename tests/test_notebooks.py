"""The shipped notebooks run headless end to end, and the notebook helpers behave in a kernel.

Each notebook is executed with nbclient in a kernel of this very interpreter, with the widget
state saved, as JupyterLab would save it. tqdm's widget bars leave a frozen "0%" text fallback
in the outputs, so the bars are checked in the saved widget state instead (DESIGN.md 4).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import threading
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from memori_nb.notebook import runs, seed_dataframe
from memori_nb.session import run_sync

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROGRESS_MODELS = {"FloatProgressModel", "IntProgressModel"}
# The shipped sample file holds 37 conversations.
SAMPLE_CONVERSATIONS = 37
LOCOMO = NOTEBOOKS.parent.parent / "shared" / "data" / "locomo" / "locomo10.json"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A python3 kernelspec pointing at this interpreter, and private Jupyter folders."""
    spec = tmp_path / "jupyter-data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (memori_nb tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter-data"))
    for name, folder in [("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"),
                         ("MPLCONFIGDIR", "matplotlib")]:
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(name, str(tmp_path / folder))
    # The notebooks must run offline whatever the environment says.
    monkeypatch.delenv("MEMORI_API_KEY", raising=False)
    monkeypatch.delenv("MEMORI_API_URL_BASE", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    return work


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=120, store_widget_state=True,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def progress_bars(nb: nbformat.NotebookNode) -> list[dict]:
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    return [model["state"] for model in state.values()
            if model["model_name"] in PROGRESS_MODELS]


def errors(nb: nbformat.NotebookNode) -> list[str]:
    return [f"{out.ename}: {out.evalue}" for cell in nb.cells if cell.cell_type == "code"
            for out in cell.outputs if out.output_type == "error"]


@pytest.mark.parametrize("name", ["quickstart.ipynb", "backfill_from_dataframe.ipynb",
                                  "analysis.ipynb", "extraction_quality.ipynb"])
def test_notebook_is_clean_on_disk(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert sum(cell.cell_type == "markdown" for cell in nb.cells) >= len(code) // 2


def test_quickstart_runs_and_its_bar_reaches_100_percent(kernel_env):
    nb = execute("quickstart.ipynb", kernel_env)
    assert errors(nb) == []
    bars = progress_bars(nb)
    assert bars, "no progress-bar widget was saved"
    for bar in bars:
        assert bar["value"] == bar["max"] == SAMPLE_CONVERSATIONS
        assert bar["bar_style"] == "success"
    text = "\n".join(out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
                     for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "'successful': 37" in text
    assert "(0, 37)" in text  # the second run skips everything


def test_backfill_runs_with_every_bar_at_100_percent(kernel_env):
    nb = execute("backfill_from_dataframe.ipynb", kernel_env)
    assert errors(nb) == []
    bars = progress_bars(nb)
    # seed_dataframe three times (local, local again, loopback cloud) and the panel's Run
    assert len(bars) >= 4
    for bar in bars:
        assert bar["value"] == bar["max"] > 0
    # Green only where nothing failed (the panel's run of one clean customer); amber for the
    # first local run and the cloud run (some failed); red for the second local run, where
    # the one conversation sent (the invalid one) failed again.
    styles = [bar["bar_style"] for bar in bars]
    assert styles.count("warning") == 2 and styles.count("danger") == 1
    assert set(styles) == {"success", "warning", "danger"}
    outputs = {cell.id: cell.outputs for cell in nb.cells if cell.cell_type == "code"}
    printed = "".join(out.get("text", "") for outs in outputs.values() for out in outs
                      if out.output_type == "stream")
    assert ": 1 failed, 300 already seeded" in printed  # the second run
    assert "299 succeeded, 2 failed" in printed                    # against the faulty server
    plain = "".join(str(out.get("data", {}).get("text/plain", ""))
                    for outs in outputs.values() for out in outs)
    assert "HTTP 422" in plain
    assert "image/png" in {key for outs in outputs.values() for out in outs
                           for key in out.get("data", {})}
    assert "with 3 Axes>" in plain  # plot_chunking_stats: characters, messages, requests


def test_analysis_runs_standalone(kernel_env):
    nb = execute("analysis.ipynb", kernel_env)
    assert errors(nb) == []
    # The run seeds two invalid conversations beside the sample ones: its bar ends amber.
    for bar in progress_bars(nb):
        assert bar["value"] == bar["max"] and bar["bar_style"] == "warning"
    plain = "".join(str(out.get("data", {}).get("text/plain", ""))
                    for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "messages is empty" in plain and "lives_in" in plain
    # "Failures by reason" groups on the short reason, without the conversation's name.
    assert "ana-empty" in plain and "conversation 'ana-empty'" not in plain
    assert any("image/png" in out.get("data", {}) for cell in nb.cells
               if cell.cell_type == "code" for out in cell.outputs)
    assert "<Figure size 900x350 with 1 Axes>" in plain  # the chart, wide enough to read


def test_extraction_quality_shows_sources_recall_and_the_figures(kernel_env):
    pytest.importorskip("onnxruntime")  # recall embeds with the model of memori_nb[recall]
    nb = execute("extraction_quality.ipynb", kernel_env)
    assert errors(nb) == []
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    printed = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    html = "".join(str(out.get("data", {}).get("text/html", "")) for out in outputs)
    # the sources table: facts beside their turns; recall: facts with their conversations
    assert "<th>message</th>" in html and "<th>position</th>" in html
    assert "<th>conversations</th>" in html and "<th>score</th>" in html
    assert any("image/png" in out.get("data", {}) for out in outputs)  # the predicate chart
    if LOCOMO.exists():
        assert "LoCoMo: 1 chat" in printed
        assert re.search(r"observations matched: \d+ of \d+ = \d+\.\d%", printed)
        assert re.search(r"top-5 facts' sources: \d+ of \d+ \(ceiling \d+", printed)
    else:
        assert "using the shipped sample" in printed and "skipped" in printed


# --- seed_dataframe and run_sync inside a running event loop (as in a kernel) -------------


def small_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "entity_id": ["u1", "u1", "u1", "u2"],
        "conversation_id": ["c1", "c1", "c2", "c1"],
        "role": ["user", "assistant", "user", "user"],
        "content": ["I live in Oslo.", "Nice!", "I have a dog named Rex.", "I love jazz."]})


def test_seed_dataframe_works_inside_a_running_loop(tmp_path):
    db = str(tmp_path / "in-loop.duckdb")

    async def cell():  # a notebook cell: the kernel's loop is running, no await written
        return seed_dataframe(small_frame(), db=db, backend="local", progress=False)

    results = asyncio.run(cell())
    assert sorted(results.status) == ["succeeded"] * 3
    assert results.triples_count.sum() >= 3
    assert runs(db).status[0] == "completed"


def test_keyboard_interrupt_while_waiting_cancels_the_run():
    saw_cancel = threading.Event()

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    async def cell():
        return run_sync(slow)

    # A bare loop, as a kernel has: asyncio.run would install its own SIGINT handler.
    loop = asyncio.new_event_loop()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
        loop.close()
        signal.signal(signal.SIGINT, previous)
    assert elapsed < 2
    assert saw_cancel.is_set()
