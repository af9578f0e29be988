"""Run every notebook into a report: executed notebooks, HTML pages and an index page.

``fervis report`` (and ``fervis demo``) call :func:`run`. Each notebook in the repository's
``notebooks/`` folder is executed with papermill, its ``parameters`` cell overridden by
``DATA``, ``BUDGET`` and ``MODEL``; the executed notebook and an HTML page of it (nbconvert;
static, each widget explorer shown as its saved figure) go to ``<out>/<data-name>/``, beside
``index.html``, which states the settings, the date and, per notebook, passed / failed / not run
and its run time.

The first failing cell stops the run: what ran so far stays on disk, the index marks the
notebook as failed, and :class:`NotebookError` names the notebook, the cell and the error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import html
import json
import os
import pathlib
import re
import sys
import tempfile
import time

from fervis._checks import declared_input, parse_class_order
from fervis.files import fervis_home, write_atomic

__all__ = [
    "GALLERY", "NotebookError", "NotebookResult", "Report", "data_name", "find_notebooks", "gallery", "run",
    "shrink_png", "update_readme",
]

_PASSED, _FAILED, _NOT_RUN, _RUNNING = "passed", "failed", "not run", "running"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Suffixes dropped from a data file's name to name its report folder: fer2013.csv.gz -> fer2013.
_DATA_SUFFIXES = (".gz", ".zip", ".bz2", ".xz", ".csv", ".tar", ".tgz", ".npz")


@dataclasses.dataclass
class NotebookResult:
    """What happened to one notebook.

    Attributes
    ----------
    name : str
        The notebook's file name, e.g. ``"01_saliency_maps.ipynb"``.
    status : {"passed", "failed", "not run", "running"}
    seconds : float or None
        Run time; ``None`` when not run.
    ipynb, html : pathlib.Path or None
        The executed notebook and its HTML page (also written for a failed notebook).
    error : str or None
        One line: the cell and the error, for a failed notebook.
    log : pathlib.Path or None
        What the kernel process itself printed (native crash messages, C++ logs).
    """

    name: str
    status: str = _NOT_RUN
    seconds: float | None = None
    ipynb: pathlib.Path | None = None
    html: pathlib.Path | None = None
    error: str | None = None
    log: pathlib.Path | None = None


@dataclasses.dataclass
class Report:
    """A report folder and what it holds.

    Attributes
    ----------
    folder : pathlib.Path
        ``<out>/<data-name>``.
    index : pathlib.Path
        ``folder / "index.html"``.
    data, budget, model : str
        The settings every notebook ran with.
    started : datetime.datetime
    seconds : float
        Total run time so far.
    results : list of NotebookResult
        One per notebook, in run order.
    model_input, class_order : str
        The notebooks' ``MODEL_INPUT`` and ``CLASS_ORDER`` ("auto": found on the faces).
    contract : str or None
        The model contract the first notebook printed (its ``model contract:`` line).
    contract_warnings : tuple of str
        The warnings printed under it (a setting the faces could not decide, a model that does
        not classify them): the index shows them beside the contract.
    """

    folder: pathlib.Path
    index: pathlib.Path
    data: str
    budget: str
    model: str
    started: datetime.datetime
    seconds: float
    results: list
    model_input: str = "auto"
    class_order: str = "auto"
    contract: str | None = None
    contract_warnings: tuple = ()

    @property
    def ok(self):
        """True when every notebook passed."""
        return all(r.status == _PASSED for r in self.results)


class NotebookError(RuntimeError):
    """A notebook cell failed; the partial report is on disk and marked as failed.

    Attributes
    ----------
    report : Report
    notebook : str
        The failing notebook's file name.
    cell : int or None
        1-based position of the failing cell in the notebook file (markdown cells count).
    """

    def __init__(self, message, report, notebook, cell):
        super().__init__(message)
        self.report = report
        self.notebook = notebook
        self.cell = cell


def data_name(data):
    """The name of the report folder for a data source.

    Parameters
    ----------
    data : str or os.PathLike
        ``"synthetic"`` or a FER2013 file or folder.

    Returns
    -------
    str
        ``"synthetic"``, or the file's name without data/archive suffixes, reduced to
        letters, digits, ``.``, ``_`` and ``-``.

    Example
    -------
    >>> data_name("/data/fer2013.csv.gz")
    'fer2013'
    """
    if isinstance(data, str) and data == "synthetic":
        return "synthetic"
    name = pathlib.Path(os.fspath(data)).expanduser().resolve().name
    while True:
        lower = name.lower()
        suffix = next((s for s in _DATA_SUFFIXES if lower.endswith(s) and len(name) > len(s)), None)
        if suffix is None:
            break
        name = name[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return name or "data"


def find_notebooks(notebooks_dir=None):
    """The notebooks a report runs: every ``*.ipynb`` of the notebooks folder, by name.

    Parameters
    ----------
    notebooks_dir : str or os.PathLike, optional
        Default: the ``notebooks/`` folder beside the installed ``fervis`` package (a clone or
        editable install), else ``./notebooks``.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    ValueError
        No such folder, or no notebook in it.

    Example
    -------
    >>> [p.name for p in find_notebooks()]  # doctest: +SKIP
    ['01_saliency_maps.ipynb', '02_filter_visualization.ipynb', ...]
    """
    func = "fervis.report.find_notebooks"
    if notebooks_dir is None:
        beside_package = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
        in_cwd = pathlib.Path.cwd() / "notebooks"
        candidates = [beside_package, in_cwd]
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            raise ValueError(
                f"The 'notebooks_dir' parameter of {func} must name the folder of fervis's notebooks; none was "
                f"given and there is none at {os.fspath(beside_package)!r} or {os.fspath(in_cwd)!r}. Run from a "
                "clone of the fervis repository or pass --notebooks DIR."
            )
    else:
        folder = pathlib.Path(os.fspath(notebooks_dir)).expanduser()
        if not folder.is_dir():
            raise ValueError(
                f"The 'notebooks_dir' parameter of {func} must be an existing folder. Got "
                f"{os.fspath(notebooks_dir)!r} instead."
            )
    found = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not found:
        raise ValueError(
            f"The 'notebooks_dir' parameter of {func} must be a folder holding .ipynb notebooks. "
            f"Got {os.fspath(folder)!r} instead, which has none."
        )
    return found


# --------------------------------------------------------------------------- kernel


@contextlib.contextmanager
def _this_python_kernel(kernel_name):
    """Make ``kernel_name`` start this interpreter (the current venv's Python).

    Jupyter picks kernel specs from several folders (the user's before the venv's outside a
    venv), so "python3" may name another Python that lacks fervis. When it does, a spec for
    ``sys.executable`` is put first on ``JUPYTER_PATH`` for the duration of the run.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec(kernel_name).argv
    except NoSuchKernel:
        argv = []
    major, minor = sys.version_info[:2]
    if argv and (argv[0] in {"python", f"python{major}", f"python{major}.{minor}"}
                 or os.path.abspath(argv[0]) == os.path.abspath(sys.executable)):
        yield  # jupyter_client runs "python" as sys.executable
        return
    with tempfile.TemporaryDirectory(prefix="fervis-kernel-") as tmp:
        spec_dir = pathlib.Path(tmp) / "kernels" / kernel_name
        spec_dir.mkdir(parents=True)
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python {major} (fervis)", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        saved = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join([tmp] + ([saved] if saved else []))
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved


@contextlib.contextmanager
def _inline_figures():
    """Kernels inherit MPLBACKEND; a non-inline one (e.g. Agg, set for tests or headless
    scripts) would leave every figure out of the report, so it is unset while notebooks run."""
    saved = os.environ.get("MPLBACKEND")
    if saved is None or "inline" in saved:
        yield
        return
    del os.environ["MPLBACKEND"]
    try:
        yield
    finally:
        os.environ["MPLBACKEND"] = saved


def _kernel_manager_class(log_file):
    """nbclient's kernel manager, with the kernel's own stdout/stderr (TensorFlow's C++ start-up
    lines, a crash message) going to ``log_file`` instead of the terminal, and CurveZMQ
    transport encryption where the kernel supports it (ipykernel otherwise warns on each start)."""
    import zmq
    from jupyter_client.manager import AsyncKernelManager

    encrypt = "transport_encryption" in AsyncKernelManager.class_trait_names() and zmq.has("curve")

    class _ReportKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            if encrypt:
                kwargs.setdefault("transport_encryption", "auto")
            super().__init__(**kwargs)

        async def start_kernel(self, **kw):
            kw.setdefault("stdout", log_file)
            kw.setdefault("stderr", log_file)
            return await super().start_kernel(**kw)

    return _ReportKernelManager


def _last_line(path):
    try:
        lines = [line for line in pathlib.Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


# --------------------------------------------------------------------------- pages


def _one_line(text, limit=400):
    text = " ".join(_ANSI.sub("", str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failed_cell(nb_path, died=False):
    """(1-based cell number in the original notebook, cell count, execution count, error line)
    of the failed cell in an executed notebook, or Nones. When the kernel ``died``, the failed
    cell is the last one that started."""
    import nbformat

    try:
        nb = nbformat.read(nb_path, as_version=4)
    except (OSError, ValueError):
        return None, None, None, None
    position, found, started = 0, None, None
    for cell in nb.cells:
        meta = cell.get("metadata", {})
        tags = meta.get("tags", [])
        # Cells papermill adds (injected parameters, error banners) are not the user's cells.
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            continue
        position += 1
        state = meta.get("papermill", {})
        if cell.get("cell_type") == "code" and state.get("start_time"):
            started = (position, cell.get("execution_count"), None)
        if found is not None:
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors or state.get("exception") is True:
            found = (position, cell.get("execution_count"),
                     f"{errors[0].ename}: {errors[0].evalue}" if errors else None)
    if died:
        found = started
    if found is None:
        return None, position, None, None
    return found[0], position, found[1], found[2]


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _widget_tree(state, model_id, seen=None):
    """The widget models under ``model_id`` (itself first), following ``children`` references."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in state:
        return []
    seen.add(model_id)
    found = [state[model_id]]
    for child in state[model_id].get("state", {}).get("children", []):
        found += _widget_tree(state, str(child).removeprefix("IPY_MODEL_"), seen)
    return found


def _control_values(tree):
    """``"face = 0"``, ``"method = gradient"``, ...: what the controls in a widget tree are set to."""
    settings = []
    for model in tree:
        values = model.get("state", {})
        if "description" not in values:
            continue
        if "_options_labels" in values and isinstance(values.get("index"), int):
            value = values["_options_labels"][values["index"]]
        elif "value" in values and not isinstance(values["value"], (list, dict)):
            value = re.sub(r"<[^>]+>", "", str(values["value"])).strip()  # an HTML widget's text
        else:
            continue
        settings.append(f"{values['description']} = {value}" if values["description"] else value)
    return settings


def _static_widgets(nb):
    """``nb`` with every widget view replaced by what its Output widgets show, as plain outputs.

    A page has no kernel: its sliders could move but redraw nothing, and rendering them needs
    the widget manager from a CDN (blank offline). So each explorer becomes its saved figure,
    under a line giving the controls' values (``face = 0 · method = gradient``); the notebook
    file itself keeps its widgets for JupyterLab.
    """
    import nbformat

    state = nb.metadata.get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(_WIDGET_VIEW)  # a display, or the cell's value (execute_result)
            if view is None:
                outputs.append(output)
                continue
            tree = _widget_tree(state, view.get("model_id"))
            settings = _control_values(tree)
            shown = [out for model in tree if model.get("model_name") == "OutputModel"
                     for out in model.get("state", {}).get("outputs", []) if out.get("output_type") != "stream"]
            note = "Interactive in JupyterLab; shown here" + (f": {' · '.join(settings)}" if settings else "") + "."
            if not shown:
                note = "An interactive widget: open the notebook in JupyterLab to use it."
            outputs.append(nbformat.v4.new_output("display_data", data={"text/markdown": f"*{note}*",
                                                                         "text/plain": note}))
            outputs += [nbformat.from_dict(out) for out in shown]
        if "outputs" in cell:
            cell["outputs"] = outputs
    nb.metadata.pop("widgets", None)
    return nb


# TensorFlow's C++ log lines (absl format: severity, date, time, thread, file:line]), absl's notice before
# them and the second line of the CPU-feature notice: some are written at `import tensorflow`, before
# TF_CPP_MIN_LOG_LEVEL is read, so no setting holds them back. fervis.session hides the start-up ones
# (fervis._startup), but a notebook may import TensorFlow before it, and TensorFlow logs so at run time
# too. They are not results; the pages leave them out, the executed notebooks and the kernel logs keep
# them (a C++ error is still there to read).
_TF_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
                          r"STDERR|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\] .*"
                          r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler "
                          r"flags\.)$")


def _without_tf_logs(nb):
    """``nb`` without TensorFlow's log lines in its stderr streams (an output left empty goes)."""
    for cell in nb.cells:
        if "outputs" not in cell:
            continue
        kept = []
        for output in cell["outputs"]:
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = [line for line in output.get("text", "").splitlines(keepends=True)
                         if not _TF_LOG_LINE.match(line.rstrip("\n"))]
                if not "".join(lines).strip():
                    continue
                output["text"] = "".join(lines)
            kept.append(output)
        cell["outputs"] = kept
    return nb


def _write_html(nb_path, html_path):
    import nbformat
    from nbconvert import HTMLExporter

    nb = _without_tf_logs(_static_widgets(nbformat.read(nb_path, as_version=4)))
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    write_atomic(html_path, body)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border: 1px solid #ccc; padding: .35em .8em; text-align: left; vertical-align: top; }
.passed { color: #17663a; font-weight: bold; } .failed { color: #b00020; font-weight: bold; }
.running { color: #8a5a00; } .not-run { color: #777; }
dt { font-weight: bold; float: left; width: 6em; } dd { margin-left: 7em; }
table { width: 100%; } code { white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def _write_index(report):
    esc = html.escape
    rows = []
    for r in report.results:
        shown = [(r.html, "page"), (r.ipynb, "notebook")] + ([(r.log, "kernel log")] if r.status == _FAILED else [])
        links = " ".join(
            f'<a href="{esc(os.path.relpath(p, report.folder))}">{label}</a>'
            for p, label in shown if p is not None and p.exists()
        )
        seconds = "" if r.seconds is None else f"{r.seconds:.0f} s"
        error = f"<br><code>{esc(r.error)}</code>" if r.error else ""
        rows.append(
            f'<tr><td>{esc(r.name)}</td><td class="{r.status.replace(" ", "-")}">{esc(r.status)}{error}</td>'
            f"<td>{seconds}</td><td>{links}</td></tr>"
        )
    overall = "passed" if report.ok else ("running" if any(r.status == _RUNNING for r in report.results)
                                          else "failed")
    from fervis import __version__

    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fervis report: {esc(report.folder.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>fervis report: {esc(report.folder.name)}</h1>
<p class="{overall}">Overall: {overall}</p>
<dl>
<dt>data</dt><dd>{esc(report.data)}</dd>
<dt>budget</dt><dd>{esc(report.budget)}</dd>
<dt>model</dt><dd>{esc(report.model)}</dd>
<dt>model input / class order</dt><dd>{esc(report.model_input)} / {esc(report.class_order)}</dd>
<dt>model contract</dt><dd>{esc(report.contract or "not known yet")}</dd>
{"".join(f'<dd class="failed">warning: {esc(w)}</dd>' for w in report.contract_warnings)}
<dt>date</dt><dd>{report.started.strftime("%Y-%m-%d %H:%M:%S")}</dd>
<dt>run time</dt><dd>{report.seconds:.0f} s</dd>
<dt>fervis</dt><dd>{esc(__version__)}</dd>
</dl>
<table><thead><tr><th>notebook</th><th>status</th><th>run time</th><th>open</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""
    write_atomic(report.index, page)


# --------------------------------------------------------------------------- run


def _check(data, budget, model, out):
    from fervis import training
    from fervis.session import BUDGETS

    func = "fervis.report.run"
    if not isinstance(data, (str, os.PathLike)) or (
        not (isinstance(data, str) and data == "synthetic") and not os.path.exists(os.fspath(data))
    ):
        raise ValueError(
            f"The 'data' parameter of {func} must be 'synthetic' or an existing FER2013 file or folder. "
            f"Got {data!r} instead."
        )
    if budget not in BUDGETS:
        raise ValueError(
            f"The 'budget' parameter of {func} must be one of {sorted(BUDGETS)}. Got {budget!r} instead."
        )
    training.check_model_spec(model, func, allow_model=False)  # the notebooks take MODEL as text
    if not isinstance(out, (str, os.PathLike)) or os.fspath(out) == "":
        raise ValueError(f"The 'out' parameter of {func} must be a folder path. Got {out!r} instead.")


def _check_contract(model_input, class_order):
    """The contract settings, checked before Keras is imported (the notebooks take them as text)."""
    declared_input(model_input, "fervis.report.run")
    parse_class_order(class_order, "fervis.report.run", text_only=True)


def _contract_line(ipynb):
    """The ``model contract: ...`` line an executed notebook printed and the ``warning:`` lines under
    it, or ``(None, ())``."""
    try:
        cells = json.loads(pathlib.Path(ipynb).read_text()).get("cells", [])
    except (OSError, ValueError):
        return None, ()
    for cell in cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            lines = ("".join(text) if isinstance(text, list) else text).splitlines()
            for at, line in enumerate(lines):
                if line.startswith("model contract: "):
                    warnings = tuple(w.strip().removeprefix("warning: ") for w in lines[at + 1:]
                                     if w.strip().startswith("warning: "))
                    return line.removeprefix("model contract: "), warnings
    return None, ()


def _absolute(spec, keep):
    """Paths become absolute (notebooks run in their own folder); names in ``keep`` stay."""
    spec_str = os.fspath(spec)
    if spec_str in keep or spec_str.startswith(("pretrained:", "train:")):
        return spec_str
    return os.path.abspath(os.path.expanduser(spec_str))


def run(data="synthetic", budget="quick", model="auto", out="reports", notebooks_dir=None,
        progress=True, kernel_name="python3", cell_timeout=None, model_input="auto", class_order="auto"):
    """Execute every notebook with the given settings and write the report.

    Parameters
    ----------
    data : str or os.PathLike, default "synthetic"
        The notebooks' ``DATA``: ``"synthetic"`` or a FER2013 file or folder.
    budget : {"quick", "full"}, default "quick"
        The notebooks' ``BUDGET``.
    model : str or os.PathLike, default "auto"
        The notebooks' ``MODEL``: ``"auto"``, ``"train"``, ``"train:<recipe>"``, ``"pretrained:<name>"``
        or a model file.
    out : str or os.PathLike, default "reports"
        The reports folder; this report goes to ``out/<data_name(data)>/``.
    notebooks_dir : str or os.PathLike, optional
        Where the notebooks are (see :func:`find_notebooks`).
    progress : bool, default True
        A line per notebook and papermill's per-cell progress bar, on stderr.
    kernel_name : str, default "python3"
        The Jupyter kernel; "python3" is made to start this interpreter.
    cell_timeout : int, optional
        Seconds one cell may run (default: no limit).
    model_input, class_order : str, default "auto"
        The notebooks' ``MODEL_INPUT`` and ``CLASS_ORDER``: how the model was trained (see
        :func:`fervis.contract.inspect`); "auto" finds it on the faces. The contract the notebooks
        found is recorded in the index.

    Returns
    -------
    Report
        Every notebook passed.

    Raises
    ------
    NotebookError
        A cell failed (or the kernel died): the message names the notebook, the cell and the
        error; the partial report is written and marked as failed.
    ValueError
        Bad settings, or no notebooks found.

    Example
    -------
    >>> report = run("synthetic", budget="quick")  # doctest: +SKIP
    >>> report.index  # doctest: +SKIP
    PosixPath('reports/synthetic/index.html')
    """
    _check(data, budget, model, out)
    _check_contract(model_input, class_order)
    # The kernels run in the notebooks' folder: a relative FERVIS_HOME must reach them absolute,
    # or they would cache into another folder than this process.
    fervis_home()
    notebooks = find_notebooks(notebooks_dir)
    import papermill

    data_param = _absolute(data, {"synthetic"})
    model_param = _absolute(model, {"auto", "train"})
    folder = pathlib.Path(os.fspath(out)).expanduser().resolve() / data_name(data)
    folder.mkdir(parents=True, exist_ok=True)
    report = Report(folder=folder, index=folder / "index.html", data=data_param, budget=budget,
                    model=model_param, started=datetime.datetime.now(), seconds=0.0,
                    results=[NotebookResult(name=p.name) for p in notebooks], model_input=model_input,
                    class_order=class_order)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    for result in report.results:  # files of an earlier run would pass for this run's
        stem = pathlib.Path(result.name).stem
        for stale in (folder / result.name, folder / f"{stem}.html", logs / f"{stem}.kernel.log"):
            stale.unlink(missing_ok=True)
    start = time.perf_counter()
    parameters = {"DATA": data_param, "BUDGET": budget, "MODEL": model_param, "MODEL_INPUT": model_input,
                  "CLASS_ORDER": class_order}
    with _this_python_kernel(kernel_name), _inline_figures():
        for i, (path, result) in enumerate(zip(notebooks, report.results), 1):
            if progress:
                print(f"fervis report: [{i}/{len(notebooks)}] {path.name} (data {data_name(data)}, budget {budget})",
                      file=sys.stderr, flush=True)
            result.status, result.ipynb = _RUNNING, folder / path.name
            kernel_log = result.log = logs / (path.stem + ".kernel.log")
            report.seconds = time.perf_counter() - start
            _write_index(report)
            t0 = time.perf_counter()
            failure = None
            try:
                with open(kernel_log, "wb") as log_file:
                    papermill.execute_notebook(
                        os.fspath(path), os.fspath(result.ipynb), parameters=parameters, kernel_name=kernel_name,
                        progress_bar=progress, cwd=os.fspath(path.parent), start_timeout=180,
                        execution_timeout=cell_timeout, kernel_manager_class=_kernel_manager_class(log_file),
                    )
            except KeyboardInterrupt:
                result.status, result.error = _FAILED, "interrupted"
                result.seconds = time.perf_counter() - t0
                report.seconds = time.perf_counter() - start
                _write_index(report)
                raise
            except Exception as err:  # noqa: BLE001  (a dead kernel, a timeout, an error in a cell)
                failure = err
            result.seconds = time.perf_counter() - t0
            if result.ipynb.exists():
                result.html = folder / (path.stem + ".html")
                _write_html(result.ipynb, result.html)
            else:
                result.ipynb = None
            if report.contract is None and result.ipynb is not None:
                report.contract, report.contract_warnings = _contract_line(result.ipynb)
            if failure is None:
                result.status = _PASSED
                report.seconds = time.perf_counter() - start
                _write_index(report)
                continue
            died = type(failure).__name__ == "DeadKernelError"  # e.g. a native crash
            cell, total, exec_count, line = _failed_cell(result.ipynb, died) if result.ipynb else (None,) * 4
            ename = getattr(failure, "ename", None)
            what = (f"{ename}: {failure.evalue}" if ename else line) or f"{type(failure).__name__}: {failure}"
            if died:
                last = _last_line(kernel_log)
                what = "the kernel died" + (f" ({last}; kernel log {kernel_log})" if last else "")
            where = "" if cell is None else f" at cell {cell} of {total}" + (
                f" (In [{exec_count}])" if exec_count is not None else "")
            result.status, result.error = _FAILED, _one_line(f"cell {cell}: {what}" if cell else what)
            report.seconds = time.perf_counter() - start
            _write_index(report)
            message = _one_line(f"notebook {path.name} failed{where}: {what}", limit=600)
            raise NotebookError(f"{message} (partial report: {report.index})", report, path.name, cell)
    report.seconds = time.perf_counter() - start
    _write_index(report)
    return report


# --------------------------------------------------------------------------- gallery

#: README's gallery: (notebook, cell tag, file under the gallery folder, heading). The tag marks
#: the cell in the notebook (cell metadata ``tags``); a ``.png`` takes the cell's last figure, a
#: ``.md`` its last table (a DataFrame's HTML output) as a Markdown table.
GALLERY = (
    ("01_saliency_maps.ipynb", "gallery-saliency", "saliency_per_emotion.png",
     "Where does the model look? One face per emotion, seven saliency methods", None),
    ("01_saliency_maps.ipynb", "gallery-region-shares", "region_shares.md",
     "Grad-CAM mass per face region and true class (rows sum to 1; n faces per class)", "gallery-registration"),
    ("02_filter_visualization.ipynb", "gallery-filters", "filters_top_faces.png",
     "What do the last block's filters want? Gradient ascent beside the faces that drive each filter hardest", None),
    ("03_per_label_analysis.ipynb", "gallery-confusion", "confusion.png",
     "Which labels are easy, which hard? The confusion matrix, counts and row-normalised", "gallery-headline"),
    ("04_training_monitoring.ipynb", "gallery-training", "training_curves.png",
     "Watching the CNN train: loss, accuracy and per-class recall per epoch", None),
)
"""README's gallery: (notebook, tag of the cell whose output is shown, file name, heading, tag of the cell
whose printed text is quoted under the heading or None). Headings name the question; the quoted text
(the headline computed from the per-class table, the registration measured before the region template
is used) states the answer, so no caption claims what the numbers do not show."""
#: README images stay small.
MAX_PNG_BYTES = 300 * 1024
GALLERY_BEGIN = "<!-- gallery:begin -->"
GALLERY_END = "<!-- gallery:end -->"


def _read_report_notebooks(folder):
    """The executed notebooks GALLERY draws on, each read once: {file name: notebook}."""
    import nbformat

    notebooks = {}
    for name in dict.fromkeys(nb for nb, *_ in GALLERY):
        nb_path = folder / name
        if not nb_path.exists():
            raise ValueError(f"The report has no executed notebook {str(nb_path)!r}; run `fervis report` first.")
        notebooks[name] = nbformat.read(nb_path, as_version=4)
    return notebooks


def _tagged_cell(nb, nb_path, tag):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"Notebook {str(nb_path)!r} must have exactly one cell tagged {tag!r}; it has {len(cells)}.")
    return cells[0]


def _last_output(cell, mime, nb_path, tag):
    found = [o["data"][mime] for o in cell.get("outputs", []) if mime in o.get("data", {})]
    if not found:
        raise ValueError(f"The cell tagged {tag!r} in {str(nb_path)!r} has no {mime} output (did it run?).")
    return found[-1]


def shrink_png(png, max_bytes=MAX_PNG_BYTES):
    """PNG bytes at most ``max_bytes`` long: re-encoded with a 256-colour palette, then scaled down.

    Parameters
    ----------
    png : bytes
    max_bytes : int

    Returns
    -------
    bytes
        ``png`` itself when it is small enough.
    """
    import io

    from PIL import Image

    if len(png) <= max_bytes:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = 1.0
    while True:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.LANCZOS) if scale < 1 else image
        buf = io.BytesIO()
        small.quantize(256).save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes or min(size) <= 16:
            return buf.getvalue()
        scale *= 0.85 * (max_bytes / buf.tell()) ** 0.5


def _html_table_to_markdown(table_html):
    # bs4 with the standard library's parser: nbconvert already depends on it; no lxml here.
    from bs4 import BeautifulSoup

    table = BeautifulSoup(table_html, "html.parser").find("table")
    if table is None:
        raise ValueError("the HTML output holds no <table>")
    rows = [[cell.get_text(" ", strip=True) for cell in tr.find_all(["th", "td"])] for tr in table.find_all("tr")]
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows if any(r)]
    header, body = rows[0], rows[1:]
    if body and not any(body[0][1:]):  # pandas' row holding the index's name: it heads the first column
        corner = f"{body[0][0]} \\ {header[0]}" if header[0] and body[0][0] else header[0] or body[0][0]
        header = [corner] + header[1:]
        body = body[1:]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join([f"**{r[0]}**"] + r[1:]) + " |" for r in body]
    return "\n".join(lines) + "\n"


def gallery(report_folder, out_dir="docs/gallery", link="docs/gallery", max_bytes=MAX_PNG_BYTES):
    """Copy README's gallery out of a report: the tagged figures as PNGs, the tagged table as Markdown.

    Parameters
    ----------
    report_folder : str or os.PathLike
        A report written by :func:`run` (``reports/<data-name>``).
    out_dir : str or os.PathLike, default "docs/gallery"
    link : str, default "docs/gallery"
        How README reaches ``out_dir`` (the image links' prefix).
    max_bytes : int, default 300 KiB
        Larger figures are re-encoded and scaled down (:func:`shrink_png`).

    Returns
    -------
    str
        The Markdown block for README, from :data:`GALLERY_BEGIN` to :data:`GALLERY_END`.

    Raises
    ------
    ValueError
        A notebook, a tagged cell or its output is missing; nothing is written then.
    """
    import base64

    folder = pathlib.Path(os.fspath(report_folder))
    out = pathlib.Path(os.fspath(out_dir))
    notebooks = _read_report_notebooks(folder)
    files = {}
    quotes = {}
    for notebook, tag, name, _, quote in GALLERY:
        nb_path = folder / notebook
        cell = _tagged_cell(notebooks[notebook], nb_path, tag)
        if quote is not None:
            quotes[name] = _printed(_tagged_cell(notebooks[notebook], nb_path, quote), nb_path, quote)
        if name.endswith(".png"):
            png = base64.b64decode(_last_output(cell, "image/png", nb_path, tag))
            files[name] = shrink_png(png, max_bytes)
        else:
            try:
                files[name] = _html_table_to_markdown(_last_output(cell, "text/html", nb_path, tag)).encode()
            except ValueError as err:
                raise ValueError(f"The cell tagged {tag!r} in {str(nb_path)!r}: {err}.") from None
    out.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():  # everything was read: now write, each file atomically
        write_atomic(out / name, payload)
    settings = _report_settings(notebooks.values())
    lines = [GALLERY_BEGIN,
             f"*Generated from `fervis report --data {settings.get('data', '?')} --budget {settings.get('budget', '?')}` "
             f"(model `{settings.get('model', '?')}`) by `make gallery`; do not edit by hand.*", ""]
    for _, _, name, heading, _ in GALLERY:
        lines.append(f"**{heading}**")
        lines.append("")
        if name in quotes:
            lines.extend([*(f"> {line}" for line in quotes[name]), ""])
        lines.append(f"![{heading}]({link}/{name})" if name.endswith(".png") else files[name].decode().rstrip())
        lines.append("")
    lines.append(GALLERY_END)
    return "\n".join(lines)


def _printed(cell, nb_path, tag):
    """The lines a cell printed (its stdout), stripped; a ValueError naming the cell when it printed none."""
    lines = [line.strip() for output in cell.get("outputs", [])
             if output.get("output_type") == "stream" and output.get("name") == "stdout"
             for line in "".join(output.get("text", "")).splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"The cell tagged {tag!r} in {str(nb_path)!r} printed nothing to quote.")
    return lines


def _report_settings(notebooks):
    """The data, budget and model a report ran with, read back from papermill's injected parameters."""
    for nb in notebooks:
        for cell in nb.cells:
            if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
                found = dict(re.findall(r'^(DATA|BUDGET|MODEL) = "(.*)"$', cell.source, flags=re.M))
                data = found.get("DATA", "?")
                return {"data": pathlib.Path(data).name if data != "synthetic" else data,
                        "budget": found.get("BUDGET", "?"), "model": found.get("MODEL", "?")}
    return {}


def update_readme(readme, block, markers=(GALLERY_BEGIN, GALLERY_END)):
    """Replace the text between two markers of ``readme`` with ``block`` (atomically).

    ``block`` must start and end with the markers themselves (as :func:`gallery` writes it), so
    running twice gives the same file. The default markers are the gallery's.
    """
    begin_marker, end_marker = markers
    path = pathlib.Path(os.fspath(readme))
    text = path.read_text(encoding="utf-8")
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < begin:
        raise ValueError(f"{str(path)!r} has no {begin_marker} ... {end_marker} markers to put the block between.")
    write_atomic(path, text[:begin] + block + text[end + len(end_marker):])
