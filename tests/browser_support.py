"""Helpers for tests/test_browser.py: a JupyterLab server and a Chromium page driving it.

JupyterLab runs on a free localhost port with a random token, in its own settings and
workspace folders (so nothing of the user's leaks in and nothing is fetched from the
network); Chromium is Debian's, driven by Playwright through ``executable_path``
(Playwright's own browser download cannot work offline).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Nothing in a test should wait for ever; these bound each kind of wait.
SERVER_START_S = 90
NOTEBOOK_RUN_S = 180
WIDGET_UPDATE_S = 60


def chromium_or_reason():
    """(path, None) when Debian's Chromium is there (installing it with apt when root), else
    (None, the reason it is not)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM, None
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return None, f"{CHROMIUM} is absent and cannot be installed here (needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for command in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "chromium"]):
            subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        return None, f"{CHROMIUM} is absent and 'apt-get install chromium' failed: {err}"
    if not os.path.exists(CHROMIUM):
        return None, f"'apt-get install chromium' ran but {CHROMIUM} is still absent"
    return CHROMIUM, None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A running JupyterLab server; ``url(path)`` gives a tokenised URL under it."""

    def __init__(self, process, port, token, log_path):
        self.process, self.port, self.token, self.log_path = process, port, token, log_path

    def url(self, path="", query=""):
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={self.token}{'&' + query if query else ''}"

    def log(self):
        return pathlib.Path(self.log_path).read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def jupyterlab(root_dir, state_dir, fervis_home):
    """Start JupyterLab serving ``root_dir``; shut it down (the whole process group) on exit."""
    state_dir = pathlib.Path(state_dir)
    settings = state_dir / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    # No "fetch news?" toast over the notebook, and nothing fetched from the network.
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Every cell in the DOM (JupyterLab 4 may otherwise detach cells scrolled out of view).
    notebook_settings = state_dir / "user-settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True, exist_ok=True)
    (notebook_settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, FERVIS_HOME=str(fervis_home), JUPYTER_CONFIG_DIR=str(state_dir / "config"),
               JUPYTER_RUNTIME_DIR=str(state_dir / "runtime"), PYTHONUNBUFFERED="1")
    # The test process sets MPLBACKEND=Agg; in a kernel that would hide every figure.
    env.pop("MPLBACKEND", None)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={state_dir / 'user-settings'}",
        f"--LabApp.workspaces_dir={state_dir / 'workspaces'}", "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
    ]
    log_path = state_dir / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = JupyterLab(process, port, token, log_path)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with status {process.returncode}:\n{server.log()}")
            try:
                with urllib.request.urlopen(server.url("api/status"), timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_S} s:\n{server.log()}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


def _stop(process):
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # the server and the kernels it started
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --------------------------------------------------------------------------- the page

_KERNEL_IDLE_AND_DONE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  const prompts = Array.from(panel.node.querySelectorAll('.jp-InputPrompt'));
  return !prompts.some(p => p.textContent.includes('*'));
}"""


def open_notebook(page, server, name):
    """Open ``name`` in JupyterLab (a fresh workspace: no notebook of an earlier test restored)
    and wait until it is the current tab and its kernel is ready."""
    page.goto(server.url(f"lab/workspaces/{secrets.token_hex(4)}/tree/{name}", "reset"),
              wait_until="domcontentloaded", timeout=SERVER_START_S * 1000)
    page.wait_for_function(
        """(name) => {
          const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
          return !!(panel && panel.context && panel.context.path === name && panel.sessionContext
                    && panel.sessionContext.isReady);
        }""", arg=name, timeout=SERVER_START_S * 1000)
    page.wait_for_function(_KERNEL_IDLE_AND_DONE, timeout=SERVER_START_S * 1000)


def run_all(page):
    """Run every cell (Run > Run All Cells) and wait until the kernel is idle with no cell pending.

    Returns "cell N: <error name>: <message>" for the first error output, or None.
    """
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(1000)  # let the first cell be queued before watching for idle
    page.wait_for_function(_KERNEL_IDLE_AND_DONE, timeout=NOTEBOOK_RUN_S * 1000, polling=500)
    return page.evaluate(_FIRST_ERROR)


_FIRST_ERROR = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    for (const output of cell.outputs.toJSON()) {
      if (output.output_type === 'error') return `cell ${i + 1}: ${output.ename}: ${output.evalue}`;
    }
  }
  return null;
}"""


def slider_handle(page, label):
    """The handle of the ipywidgets slider whose description matches the regex ``label``."""
    slider = page.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=label)).first
    slider.wait_for(state="visible", timeout=WIDGET_UPDATE_S * 1000)
    return slider, slider.locator(".noUi-handle").first


def dropdown(page, label):
    """The ``<select>`` of the ipywidgets dropdown whose description matches ``label``."""
    box = page.locator(".widget-dropdown").filter(has=page.locator(".widget-label", has_text=label)).first
    box.wait_for(state="visible", timeout=WIDGET_UPDATE_S * 1000)
    return box.locator("select")


def images(page):
    """The ``src`` of every image in the open notebook's outputs (rendered maps, as data URLs)."""
    return page.locator(".jp-Notebook .jp-OutputArea-output img").evaluate_all("els => els.map(e => e.src)")


def wait_for_images(page, timeout_s=WIDGET_UPDATE_S):
    """The notebook's output images once there is at least one and they have stopped changing."""
    deadline = time.monotonic() + timeout_s
    previous = None
    while time.monotonic() < deadline:
        current = images(page)
        if current and current == previous:
            return current
        previous = current
        time.sleep(1.0)
    raise AssertionError(f"no stable output image within {timeout_s} s (last: {len(previous or [])} images)")


def wait_for_change(page, before, timeout_s=WIDGET_UPDATE_S):
    """The notebook's output images once they differ from ``before`` and are stable; raises if they
    never change."""
    deadline = time.monotonic() + timeout_s
    previous = None
    while time.monotonic() < deadline:
        current = images(page)
        if current and current != before and current == previous:
            return current
        previous = current
        time.sleep(1.0)
    raise AssertionError(f"the output image did not change within {timeout_s} s")
