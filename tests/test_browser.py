"""The notebooks and the seeding panel in a real JupyterLab, driven by headless Chromium.

Starts JupyterLab on a free loopback port with every Jupyter folder in a temporary directory,
opens a notebook, runs all cells through the menu, and checks what was rendered: tqdm's
progress bar as a widget (not its text fallback) reaching 100%; the panel's Run and Stop
buttons; its dry-run plan, its amber bar after failures, its failures table (first, with
short reasons) and its results pages behind the Next button. Screenshots are saved in each
test's tmp_path. Follows DESIGN.md section 4."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    # Nothing may reach out to PyPI from the test.
    "@jupyterlab/extensionmanager-extension:plugin": {"enabled": False},
    "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
    # Render every cell, so the last ones are in the page without scrolling.
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}
SERVER_START_SECONDS = 60
RUN_ALL_SECONDS = 45
SAMPLE_CONVERSATIONS = 37
RUN_ALL_ATTEMPTS = 6

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is missing (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {process.returncode}:\n"
                                 f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"JupyterLab did not start in {SERVER_START_SECONDS} s:\n"
                         f"{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab server on a free port, isolated in a temporary folder.

    Yields ``(base_url, token, root_dir)``; notebooks copied into root_dir can be opened.
    """
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    dirs = {name: tmp_path / name for name in
            ("config", "data", "runtime", "ipython", "tmp", "root", "lab-settings")}
    for folder in dirs.values():
        folder.mkdir()
    spec = dirs["data"] / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    (dirs["lab-settings"] / "overrides.json").write_text(json.dumps(OVERRIDES))
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
           "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "IPYTHONDIR": str(dirs["ipython"]),
           "TMPDIR": str(dirs["tmp"]), "MPLCONFIGDIR": str(dirs["tmp"])}
    for name in ("MEMORI_API_KEY", "MEMORI_API_URL_BASE", "JUPYTER_PATH"):
        env.pop(name, None)
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
             f"--ServerApp.token={token}", f"--ServerApp.root_dir={dirs['root']}",
             f"--LabApp.app_settings_dir={dirs['lab-settings']}"],
            env=env, cwd=dirs["root"], stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/status?token={token}", process, log)
        yield base, token, dirs["root"]
    finally:
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}",
                                             method="POST")
            urllib.request.urlopen(request, timeout=5).close()
            process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - fall back to ending it ourselves
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium through Playwright, with its own profile folder."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def open_and_run_all(context, base: str, token: str, path: Path):
    """Open a notebook in JupyterLab, Run All Cells from the menu, wait until all ran."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = context.new_page()
    page.set_default_timeout(RUN_ALL_SECONDS * 1000)
    # A workspace of its own, so tabs restored from an earlier test do not share the page.
    # JupyterLab sometimes asks which kernel to start though the notebook names one (seen
    # when a test opens the first notebook on a busy machine); its choice is the right one.
    page.add_locator_handler(
        page.locator(".jp-Dialog", has_text="Select Kernel"),
        lambda dialog: dialog.locator("button", has_text=re.compile(r"^Select$")).click())
    page.goto(f"{base}/lab/workspaces/{path.stem}/tree/{path.name}?token={token}")
    idle = page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator"
                        "[data-status='idle']")
    idle.wait_for()
    code_cells = sum(cell["cell_type"] == "code"
                     for cell in json.loads(path.read_text())["cells"])
    page.wait_for_function(
        "n => document.querySelectorAll("
        "'.jp-Notebook .jp-CodeCell .jp-InputPrompt').length === n", arg=code_cells)

    # The toolbar reads idle before the kernel can run anything, and a Run All sent too
    # early does nothing: run all until the first prompt changes.
    first_prompt = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").first
    for attempt in range(RUN_ALL_ATTEMPTS):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            page.wait_for_function("el => el.textContent.trim() !== '[ ]:'",
                                   arg=first_prompt.element_handle(), timeout=5000)
            break
        except PlaywrightTimeout:
            assert attempt < RUN_ALL_ATTEMPTS - 1, "Run All Cells never started"
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                 .every(e => /^\\[\\d+\\]:$/.test(e.textContent.trim()))""")
    idle.wait_for()
    assert page.locator(".jp-OutputArea-output[data-mime-type="
                        "'application/vnd.jupyter.stderr']", has_text="Error").count() == 0
    assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
    return page


def test_quickstart_progress_bar_renders_and_completes_in_jupyterlab(jupyterlab, browser,
                                                                      tmp_path):
    base, token, root = jupyterlab
    shutil.copy(NOTEBOOKS / "quickstart.ipynb", root / "quickstart.ipynb")
    page = open_and_run_all(browser, base, token, root / "quickstart.ipynb")
    try:
        # ipywidgets 8 draws a horizontal progress bar as .widget-hprogress
        bars = page.locator(".jp-OutputArea .jupyter-widgets.widget-hprogress, "
                            ".jp-OutputArea .jupyter-widgets.widget-progress")
        bars.first.wait_for()
        # One per run: the first seeds the sample, the second finds it already seeded.
        bars.nth(1).wait_for()
        assert bars.count() == 2
        bar = bars.first
        bar.scroll_into_view_if_needed()
        # Rendered as a widget, not as the frozen "0%" text fallback.
        assert page.locator(".jp-OutputArea .jp-RenderedText", has_text="0/37").count() == 0
        row = page.locator(".jp-OutputArea .widget-hbox:has(> .widget-hprogress, "
                           "> .widget-progress)").first
        page.wait_for_function(
            "el => /100%/.test(el.innerText) && /37\\/37/.test(el.innerText)",
            arg=row.element_handle())
        text = row.inner_text()
        assert "100%" in text and f"{SAMPLE_CONVERSATIONS}/{SAMPLE_CONVERSATIONS}" in text
        fill = bar.locator(".progress-bar")
        assert "progress-bar-success" in (fill.get_attribute("class") or "")
        width = fill.evaluate("e => e.getBoundingClientRect().width / "
                              "e.parentElement.getBoundingClientRect().width")
        assert width == pytest.approx(1.0, abs=0.01)
        # Each run ends with its line under the bar.
        said = page.locator(".jp-OutputArea .jp-RenderedText")
        said.filter(has_text="Nothing to seed: all 37 conversations already seeded").wait_for()
        assert said.filter(has_text=f"Seeded {SAMPLE_CONVERSATIONS} conversations").count()

        page.wait_for_timeout(500)  # let the scroll settle before the picture
        screenshot = tmp_path / "quickstart.png"
        page.screenshot(path=str(screenshot))
        assert screenshot.stat().st_size > 10_000
        print(f"screenshot: {screenshot}")
    finally:
        page.close()


def write_notebook(path: Path, sources: list[str]) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(source) for source in sources],
                      metadata={"kernelspec": {"name": "python3", "language": "python",
                                               "display_name": "Python 3 (ipykernel)"}})
    nbformat.write(nb, path)


def button(panel, name: str):
    """A visible button by its text (a Font Awesome icon is part of its accessible name)."""
    return panel.locator("button.widget-button:visible",
                         has_text=re.compile(rf"^\s*{name}\s*$"))


def cell_texts(table) -> list[list[str]]:
    """The rows of a rendered HTML table, as the cells' texts."""
    return table.evaluate("t => [...t.tBodies[0].rows].map("
                          "r => [...r.cells].map(c => c.innerText.trim()))")


PANEL_NOTEBOOK = [
    "import pandas as pd\n"
    "from memori_nb.panel import seed_panel\n"
    "from memori_nb.testing import AugmentationServer\n"
    "server = AugmentationServer(api_key='demo', latency=0.25).start()\n"
    "df = pd.DataFrame({'entity_id': 'u1',\n"
    "                   'conversation_id': [f'c{i:02d}' for i in range(40)],\n"
    "                   'role': 'user',\n"
    "                   'content': [f'I live in City{i}.' for i in range(40)]})\n"
    "panel = seed_panel(df, db='panel.duckdb', backend='memori', api_key='demo',\n"
    "                   base_url=server.url)\n"
    "panel.batch_size.value = 1\n"
    "panel",
]


def test_panel_run_and_stop_buttons_work_in_jupyterlab(jupyterlab, browser, tmp_path):
    from playwright.sync_api import expect

    base, token, root = jupyterlab
    write_notebook(root / "panel.ipynb", PANEL_NOTEBOOK)
    page = open_and_run_all(browser, base, token, root / "panel.ipynb")
    try:
        panel = page.locator(".jp-OutputArea .jupyter-widgets.widget-vbox").first
        panel.wait_for()
        run, stop = button(panel, "Run"), button(panel, "Stop")
        expect(stop).to_be_disabled()
        run.click()
        # The cell has finished and the kernel is idle, yet the counts move: the run is a
        # task on the kernel's loop, so the Stop click below reaches the kernel.
        counts = panel.locator(".widget-html-content", has_text="succeeded")
        page.wait_for_function("el => /\\b([3-9]|\\d\\d+) succeeded/.test(el.innerText)",
                               arg=counts.element_handle(), timeout=20_000)
        expect(stop).to_be_enabled()
        stop.click()
        status = panel.locator(".widget-html-content", has_text="stopped")
        status.wait_for(timeout=20_000)
        text = status.inner_text()
        match = re.search(r"stopped — (\d+) conversations? saved; Run again to continue", text)
        assert match, text
        assert 3 <= int(match.group(1)) < 40
        # widget updates arrive one message at a time: wait for them, do not sample
        expect(run).to_be_enabled()
        expect(stop).to_be_disabled()
        panel.locator(".jp-OutputArea-output", has_text="Results (").first.wait_for()
        page.wait_for_timeout(300)
        page.screenshot(path=str(tmp_path / "panel.png"))
        print(f"screenshot: {tmp_path / 'panel.png'}")
    finally:
        page.close()


# 45 conversations the fake service seeds, then three that fail validation: more results
# than one page holds (20 rows), failures that must come first with their short reasons.
PAGED_NOTEBOOK = [
    "import pandas as pd\n"
    "from memori_nb.panel import seed_panel\n"
    "from memori_nb.testing import AugmentationServer\n"
    "server = AugmentationServer(api_key='demo').start()\n"
    "rows = [('u1', f'c{i:02d}', 'user', f'I live in City{i}.') for i in range(45)]\n"
    "rows += [('u1', 'bad-role', 'robot', 'beep'), ('u1', 'bad-empty', 'user', ''),\n"
    "         ('u2', 'bad-blank', 'user', '   ')]\n"
    "df = pd.DataFrame(rows, columns=['entity_id', 'conversation_id', 'role', 'content'])\n"
    "panel = seed_panel(df, db='paged.duckdb', backend='memori', api_key='demo',\n"
    "                   base_url=server.url)\n"
    "panel",
]


def test_panel_plan_failures_and_paging_in_jupyterlab(jupyterlab, browser, tmp_path):
    from playwright.sync_api import expect

    base, token, root = jupyterlab
    write_notebook(root / "paged.ipynb", PAGED_NOTEBOOK)
    page = open_and_run_all(browser, base, token, root / "paged.ipynb")
    try:
        # A tall window, so one picture holds the whole panel: plan, bar, failures, results.
        page.set_viewport_size({"width": 1400, "height": 2600})
        panel = page.locator(".jp-OutputArea .jupyter-widgets.widget-vbox").first
        panel.wait_for()

        # Dry run: the plan, above the statistics, in the panel.
        button(panel, "Dry run").click()
        plan = panel.locator(".memori-nb-plan")
        expect(plan).to_contain_text("48 conversations: 45 to send, 0 already seeded, "
                                     "3 invalid")
        rows = dict((row[0], row[1]) for row in plan.evaluate(
            "t => [...t.querySelectorAll('tr')].map("
            "r => [...r.cells].map(c => c.innerText.trim()))"))
        assert (rows["to send"], rows["already seeded"], rows["invalid"]) == ("45", "0", "3")
        assert rows["requests"] == "45"
        assert re.fullmatch(r"about \d+ s \(45 requests, 10 at a time, 2 s each: assumed\)",
                            rows["time"]), rows["time"]
        assert panel.inner_text().index("to send") < panel.inner_text().index("Totals")
        page.wait_for_timeout(500)
        panel.screenshot(path=str(tmp_path / "panel-plan.png"))

        # Run: three conversations fail validation.
        button(panel, "Run").click()
        status = panel.locator(".widget-html-content", has_text="45 succeeded, 3 failed")
        status.wait_for(timeout=30_000)
        expect(button(panel, "Run")).to_be_enabled()
        fill = panel.locator(".widget-hprogress .progress-bar")
        expect(fill).to_have_class(re.compile(r"\bprogress-bar-warning\b"))  # amber

        output = panel.locator(".widget-output")
        tables = output.locator("table.memori-nb-table")
        expect(tables).to_have_count(2)
        text = output.inner_text()
        assert text.index("Failures (3)") < text.index("Results (48 conversations)")
        failures = cell_texts(tables.nth(0))
        assert sorted(row[1] for row in failures) == ["bad-blank", "bad-empty", "bad-role"]
        reasons = {row[1]: row[2] for row in failures}
        assert reasons["bad-role"].startswith("role 'robot' is not one of user, assistant")
        assert reasons["bad-empty"] == "nothing left to send (empty message left out: 1)"
        assert not any("conversation '" in reason for reason in reasons.values())
        # sentences read from the left, numbers from the right
        align = tables.nth(1).evaluate("t => [...t.tBodies[0].rows[0].cells].map("
                                       "c => getComputedStyle(c).textAlign)")
        assert (align[3], align[4]) == ("left", "right"), align  # reason, triples_count
        # one page of failures: no buttons; the results have three pages and one Next
        expect(button(output, "Next")).to_have_count(1)
        label = output.locator(".widget-html-content:visible", has_text=re.compile(r"^rows "))
        expect(label).to_have_text("rows 1–20 of 48")
        first = cell_texts(tables.nth(1))
        assert [row[2] for row in first[:3]] == ["failed"] * 3  # failures lead the results
        expect(button(output, "Previous")).to_be_disabled()
        page.wait_for_timeout(500)
        panel.screenshot(path=str(tmp_path / "panel-run.png"))

        # Page through with the Next button: every conversation once.
        seen = [row[1] for row in first]
        for expected in ("rows 21–40 of 48", "rows 41–48 of 48"):
            button(output, "Next").click()
            expect(label).to_have_text(expected)
            seen += [row[1] for row in cell_texts(tables.nth(1))]
        assert len(seen) == 48 and len(set(seen)) == 48
        expect(button(output, "Next")).to_be_disabled()
        button(output, "Previous").click()
        expect(label).to_have_text("rows 21–40 of 48")
        page.wait_for_timeout(500)
        output.screenshot(path=str(tmp_path / "panel-paged.png"))

        # A dry run now finds the 45 in the ledger.
        button(panel, "Dry run").click()
        expect(plan).to_contain_text("48 conversations: 0 to send, 45 already seeded, "
                                     "3 invalid")
        page.wait_for_timeout(500)
        plan.screenshot(path=str(tmp_path / "panel-plan-again.png"))
        print(f"screenshots: {tmp_path}")
    finally:
        page.close()
