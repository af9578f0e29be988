"""Widgets in a real browser: JupyterLab 4 + Debian's Chromium driven by Playwright.

Each test opens a notebook in JupyterLab, runs all cells, moves a slider (keyboard on its
handle) or picks another dropdown entry, and checks that the rendered image changed (the
image bytes, as data URLs, before and after). Screenshots go to ``test-artifacts/``.
Without Chromium (and no way to install it) the tests are skipped with the reason printed.

The notebooks' widgets are found by their descriptions (``fervis.widgets``): notebook 1's
``saliency_explorer`` has the "face" slider and the "method" dropdown, notebook 2's
``filter_explorer`` the "filter" slider. Like fervis's, the harness slider redraws only when
released (``continuous_update=False``).
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

import browser_support as bs

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts"
SALIENCY, FILTERS = "01_saliency_maps.ipynb", "02_filter_visualization.ipynb"
# Read at import, before conftest points FERVIS_HOME at a temporary folder: the notebooks should
# use the shared model cache (make test's FERVIS_HOME, else the repository's .fervis).
FERVIS_HOME = os.environ.get("FERVIS_HOME") or str(ROOT / ".fervis")

pytestmark = pytest.mark.slow


def _say(request, text):
    """Print past pytest's output capture (a skip reason is otherwise hidden without -rs)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\n[test_browser] {text}")


@pytest.fixture(scope="module")
def chromium(request):
    path, reason = bs.chromium_or_reason()
    if path is None:
        _say(request, f"skipped: {reason}")
        pytest.skip(reason)
    return path


def _harness_notebook(path):
    """A notebook of our own: a slider and a dropdown redraw a matplotlib image."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("A slider and a dropdown redraw one image."),
        nbformat.v4.new_code_cell(
            "import ipywidgets as widgets\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
            "from IPython.display import display\n\n"
            "frequency = widgets.IntSlider(value=1, min=1, max=9, description='frequency',\n"
            "                              continuous_update=False)\n"
            "colormap = widgets.Dropdown(options=['gray', 'viridis'], description='colormap')\n\n"
            "def draw(frequency, colormap):\n"
            "    wave = np.sin(np.linspace(0, frequency * np.pi, 48))\n"
            "    fig, ax = plt.subplots(figsize=(2, 2), dpi=60)\n"
            "    ax.imshow(np.outer(wave, wave), cmap=colormap)\n"
            "    ax.set_axis_off()\n"
            "    plt.show()\n\n"
            "display(frequency, colormap, widgets.interactive_output(draw, {'frequency': frequency, "
            "'colormap': colormap}))"),
    ]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory):
    """A copy of notebooks/ (the browser must not rewrite the repository's) plus the harness."""
    root = tmp_path_factory.mktemp("lab")
    for path in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(path, root / path.name)
    _harness_notebook(root / "harness.ipynb")
    broken = nbformat.v4.new_notebook()
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    broken.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("x / 0")]
    nbformat.write(broken, root / "broken.ipynb")
    return root


@pytest.fixture(scope="module")
def server(chromium, lab_root, tmp_path_factory):
    with bs.jupyterlab(lab_root, tmp_path_factory.mktemp("lab_state"), FERVIS_HOME) as lab:
        yield lab


@pytest.fixture(scope="module")
def browser(chromium):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=bs.CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(bs.WIDGET_UPDATE_S * 1000)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield page
    finally:
        try:
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=False)
        finally:
            context.close()


_MODEL_CACHED = []


def _notebook_with_model_or_skip(name):
    """Skip without the notebook; otherwise make sure the notebooks' "auto" model is in the
    shared cache (trained here once if missing), so the kernel in the browser does not train."""
    if not (NOTEBOOKS / name).exists():
        pytest.skip(f"notebooks/{name} does not exist yet")
    if _MODEL_CACHED:
        return
    code = "from fervis import session; session.prepare('synthetic', 'auto', 'quick')"
    env = dict(os.environ, FERVIS_HOME=FERVIS_HOME)
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _MODEL_CACHED.append(True)


def _shot(page, name, widget=None):
    """A screenshot of the page, or of the outputs of the cell holding ``widget`` (scrolled to)."""
    if widget is None:
        page.screenshot(path=str(ARTIFACTS / name))
        return
    outputs = widget.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' jp-Cell-outputWrapper ')][1]")
    outputs.screenshot(path=str(ARTIFACTS / name))


def _open_and_run(page, server, name):
    bs.open_notebook(page, server, name)
    error = bs.run_all(page)
    assert error is None, f"{name} raised in JupyterLab:\n{error}"


def _move_slider_and_check(page, label, shot_prefix):
    slider, handle = bs.slider_handle(page, label)
    slider.scroll_into_view_if_needed()
    before = bs.wait_for_images(page)
    value_before = handle.get_attribute("aria-valuenow")
    _shot(page, f"{shot_prefix}-before.png", slider)
    handle.focus()
    handle.press("ArrowRight")
    after = bs.wait_for_change(page, before)
    _shot(page, f"{shot_prefix}-after.png", slider)
    assert handle.get_attribute("aria-valuenow") != value_before
    return after


def _select_other_and_check(page, label, shot_prefix):
    select = bs.dropdown(page, label)
    before = bs.wait_for_images(page)
    current = select.input_value()
    options = select.locator("option").evaluate_all("els => els.map(e => e.textContent)")
    other = next(o for o in options if o != current)
    select.select_option(label=other)
    after = bs.wait_for_change(page, before)
    _shot(page, f"{shot_prefix}-after.png", select)
    return other, after


# --------------------------------------------------------------------------- the harness


def test_harness_slider_and_dropdown_redraw_the_image(server, page):
    """Proves the harness: JupyterLab renders ipywidgets 8 (no extension build) and a slider
    moved from the keyboard, or a dropdown, redraws a matplotlib image."""
    _open_and_run(page, server, "harness.ipynb")
    assert page.locator(".jp-Notebook .widget-slider").count() == 1  # the widget itself, not its text repr
    first = bs.wait_for_images(page)
    assert len(first) == 1 and first[0].startswith("data:image/png;base64,")
    after_slider = _move_slider_and_check(page, re.compile("^frequency$"), "harness-slider")
    _, after_dropdown = _select_other_and_check(page, re.compile("^colormap$"), "harness-dropdown")
    assert len({first[0], after_slider[0], after_dropdown[0]}) == 3


def test_harness_reports_a_failing_cell(server, page):
    bs.open_notebook(page, server, "broken.ipynb")
    error = bs.run_all(page)
    assert error is not None and "ZeroDivisionError" in error


# --------------------------------------------------------------------------- the notebooks


def test_saliency_notebook_image_slider_and_method(server, page):
    _notebook_with_model_or_skip(SALIENCY)
    _open_and_run(page, server, SALIENCY)
    _shot(page, "saliency-ran.png")
    _move_slider_and_check(page, re.compile("^face$"), "saliency-slider")
    _select_other_and_check(page, re.compile("^method$"), "saliency-method")


def test_filter_notebook_filter_slider(server, page):
    _notebook_with_model_or_skip(FILTERS)
    _open_and_run(page, server, FILTERS)
    _shot(page, "filters-ran.png")
    _move_slider_and_check(page, re.compile("^filter$"), "filters-slider")


# --------------------------------------------------------------------------- set-up


def test_chromium_absent_without_root_gives_a_reason(monkeypatch):
    monkeypatch.setattr(bs, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(bs.os, "geteuid", lambda: 1000)
    path, reason = bs.chromium_or_reason()
    assert path is None and "/nonexistent/chromium is absent" in reason and "root and apt-get" in reason
