"""The quickstart notebook in a real JupyterLab, driven by headless Chromium.

Starts JupyterLab on a free loopback port with every Jupyter folder in a temporary directory,
opens the quickstart notebook, runs all cells through the menu, and checks that tqdm's
progress bar was rendered as a widget (not its text fallback) and reached 100%. A screenshot
is saved in the test's tmp_path. Follows DESIGN.md section 4.
"""

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
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from playwright.sync_api import expect

    base, token, root = jupyterlab
    nb = new_notebook(cells=[new_code_cell(source) for source in PANEL_NOTEBOOK],
                      metadata={"kernelspec": {"name": "python3", "language": "python",
                                               "display_name": "Python 3 (ipykernel)"}})
    nbformat.write(nb, root / "panel.ipynb")
    page = open_and_run_all(browser, base, token, root / "panel.ipynb")
    try:
        panel = page.locator(".jp-OutputArea .jupyter-widgets.widget-vbox").first
        panel.wait_for()
        # (the Font Awesome icon is part of a button's accessible name, so match the text)
        run = panel.locator("button.widget-button", has_text=re.compile(r"^\s*Run\s*$"))
        stop = panel.locator("button.widget-button", has_text=re.compile(r"^\s*Stop\s*$"))
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
