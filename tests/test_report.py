"""Tests for fervis.report and ``fervis report``: notebooks executed with papermill into HTML
pages and an index; a failing cell stops the run with one message and a partial report.

The notebooks here are small generated ones (no TensorFlow), so a kernel start is the main
cost. The four real notebooks are run by nbval (``make test``); ``fervis report`` on them is
the README's main job.
"""

import json
import os
import pathlib
import re
import sys

import nbformat
import pytest

from fervis import cli, report


def _notebook(path, *sources):
    """Write a notebook: a markdown cell, a ``parameters`` cell, then ``sources`` as code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('DATA = "synthetic"\nBUDGET = "quick"\nMODEL = "auto"\nMODEL_INPUT = "auto"\n'
                                       'CLASS_ORDER = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A test notebook"), params]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


PASSING = ('import sys\nprint(f"settings {DATA}|{BUDGET}|{MODEL}")\nprint("kernel", sys.executable)\n'
           'print(f"model contract: read as {MODEL_INPUT} with {CLASS_ORDER}\\n  evidence: a layer\\n'
           '  warning: the faces do not tell <these> apart")',
           "import matplotlib.pyplot as plt\nplt.figure(figsize=(1, 1), dpi=20)\nplt.plot([0, 1])\nplt.show()",
           # what `import tensorflow` writes to stderr before any setting is read, then a warning of the notebook's own
           # (split in the source, which the page shows: only the output must lose them)
           'import sys\nsys.stderr.write("WARNING: All log messages before absl::" + "InitializeLog() is called are '
           'written to STDERR\\nI0000 00:00:1796650441.598662   28682 port.cc:153] one" + "DNN custom operations are '
           'on.\\nE0000 00:00:1796650212.527945   28028 cuda_platform.cc:52] failed call to cu" + "Init\\n'
           'I0000 00:00:1796650212.6   28028 cpu_feature_guard.cc:210] This TensorFlow binary is optimized.\\n'
           'To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the '
           'appropriate compiler " + "flags.\\n")\n'
           'sys.stderr.flush()\nsys.stderr.write("UserWarning: a warning of the notebook\'s own\\n")')
FAILING = ("x = 1", 'raise ValueError(f"boom {x + 41}")', 'print("never printed")')


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """The API run over a passing, a failing and a third notebook: (NotebookError, out dir)."""
    notebooks = tmp_path_factory.mktemp("notebooks")
    _notebook(notebooks / "01_pass.ipynb", *PASSING)
    _notebook(notebooks / "02_fail.ipynb", *FAILING)
    _notebook(notebooks / "03_after.ipynb", 'print("after")')
    out = tmp_path_factory.mktemp("reports")
    with pytest.raises(report.NotebookError) as info:
        report.run("synthetic", budget="full", out=out, notebooks_dir=notebooks, progress=False, model_input="0-1",
                   class_order="alphabetical")
    return info.value, out / "synthetic"


def _outputs(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


# --------------------------------------------------------------------------- names and errors


@pytest.mark.parametrize("data, expected", [
    ("synthetic", "synthetic"),
    ("/data/fer2013.csv.gz", "fer2013"),
    ("/data/fer2013.csv", "fer2013"),
    ("/data/FER 2013 (kaggle).zip", "FER-2013-kaggle"),
    ("/data/faces/", "faces"),
    ("/data/.csv", "csv"),
    ("/data/***", "data"),
])
def test_data_name(data, expected):
    assert report.data_name(data) == expected


def test_find_notebooks_default_is_the_repository_folder():
    repo_notebooks = pathlib.Path(report.__file__).resolve().parents[1] / "notebooks"
    if not any(repo_notebooks.glob("*.ipynb")):
        pytest.skip("the repository's notebooks/ has no notebook yet")
    found = report.find_notebooks()
    assert found == sorted(found) and all(p.parent == repo_notebooks and p.suffix == ".ipynb" for p in found)


def test_find_notebooks_errors(tmp_path):
    with pytest.raises(ValueError, match="'notebooks_dir' parameter of fervis.report.find_notebooks must be an "
                                         "existing folder. Got .*missing"):
        report.find_notebooks(tmp_path / "missing")
    with pytest.raises(ValueError, match="must be a folder holding .ipynb notebooks.*which has none"):
        report.find_notebooks(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"data": "no/such/file.csv"}, "'data' parameter of fervis.report.run must be 'synthetic' or an existing"),
    ({"data": 3}, "'data' parameter .* Got 3 instead"),
    ({"budget": "huge"}, r"'budget' parameter of fervis.report.run must be one of \['full', 'quick'\]. Got 'huge'"),
    ({"model": "nothing.keras"}, "'model' parameter of fervis.report.run must be 'auto', 'train', 'train:<recipe>', "
                                 "'pretrained:<name>', or an existing .keras/.h5 file. Got 'nothing.keras' instead, a file"),
    ({"model": "train:huge"}, r"'model' parameter of fervis.report.run names recipe 'huge' in 'train:huge'; recipes are"),
    ({"model": 7}, r"'model' parameter of fervis.report.run must be .* Got 7 instead"),
    ({"model_input": "0-100"}, r"'model_input' parameter of fervis.report.run must be one of \['auto', '0-255'"),
    ({"class_order": "backwards"}, "'class_order' parameter of fervis.report.run must be 'auto', 'fer2013', "
                                   "'alphabetical' or the 7 class names .* separated by commas \\(the notebooks take "
                                   "CLASS_ORDER as text\\)"),
])
def test_run_rejects_bad_settings(tmp_path, kwargs, match):
    _notebook(tmp_path / "01.ipynb", "1")
    with pytest.raises(ValueError, match=match):
        report.run(out=tmp_path / "out", notebooks_dir=tmp_path, progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- a failing notebook


def test_failure_names_notebook_cell_and_error(failed_run):
    err, folder = failed_run
    message = str(err)
    assert err.notebook == "02_fail.ipynb" and err.cell == 4
    # cell 4 of 5 in the file: markdown, parameters, x = 1, the raise, the print
    assert message.startswith("notebook 02_fail.ipynb failed at cell 4 of 5 (In [")
    assert "ValueError: boom 42" in message
    assert "\n" not in message and "Traceback" not in message and "\x1b" not in message
    assert str(folder / "index.html") in message
    assert not err.report.ok


def test_partial_report_is_kept_and_marked(failed_run):
    err, folder = failed_run
    statuses = [(r.name, r.status) for r in err.report.results]
    assert statuses == [("01_pass.ipynb", "passed"), ("02_fail.ipynb", "failed"), ("03_after.ipynb", "not run")]
    assert {p.name for p in folder.iterdir()} == {
        "index.html", "01_pass.ipynb", "01_pass.html", "02_fail.ipynb", "02_fail.html", "logs"}
    assert {p.name for p in (folder / "logs").iterdir()} == {"01_pass.kernel.log", "02_fail.kernel.log"}
    index = (folder / "index.html").read_text()
    assert "Overall: failed" in index
    assert '<td class="failed">failed' in index and "ValueError: boom 42" in index
    assert '<td class="passed">passed' in index and '<td class="not-run">not run' in index
    assert 'href="02_fail.html"' in index and 'href="03_after.html"' not in index
    assert 'href="logs/02_fail.kernel.log"' in index and 'href="logs/01_pass.kernel.log"' not in index
    executed = _outputs(folder / "02_fail.ipynb")
    assert "never printed" not in executed
    assert "boom 42" in (folder / "02_fail.html").read_text()


def test_passing_notebook_got_parameters_and_this_python(failed_run):
    _, folder = failed_run
    printed = _outputs(folder / "01_pass.ipynb")
    assert "settings synthetic|full|auto" in printed  # BUDGET injected over the notebook's "quick"
    assert f"kernel {sys.executable}\n" in printed
    page = (folder / "01_pass.html").read_text()
    assert "settings synthetic|full|auto" in page and "<html" in page
    # TensorFlow's start-up log lines stay in the executed notebook, not in the page; other stderr stays in both
    for text in (printed, page):
        assert "a warning of the notebook" in text
    assert "oneDNN custom operations" in printed and "cuInit" in printed
    assert "oneDNN custom operations" not in page and "cuInit" not in page and "absl::InitializeLog" not in page
    assert "compiler flags" in printed and "compiler flags" not in page
    # the figure is in the page, though the test process sets MPLBACKEND=Agg
    assert os.environ.get("MPLBACKEND") == "Agg" and len(re.findall(r'<img[^>]*src="data:image/png;base64,', page)) == 1
    index = (folder / "index.html").read_text()
    for setting in ("<dt>data</dt><dd>synthetic</dd>", "<dt>budget</dt><dd>full</dd>", "<dt>model</dt><dd>auto</dd>",
                    "<dt>date</dt>", "<dt>run time</dt>", "<dd>0-1 / alphabetical</dd>",
                    "<dt>model contract</dt><dd>read as 0-1 with alphabetical</dd>"):
        assert setting in index
    # the contract's warnings stand beside it on the front page, escaped; its evidence stays in the notebook
    assert '<dd class="failed">warning: the faces do not tell &lt;these&gt; apart</dd>' in index
    assert "a layer" not in index


# --------------------------------------------------------------------------- the command


def test_cli_report_writes_index_for_a_data_file(tmp_path, capsys):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    _notebook(notebooks / "01_pass.ipynb", *PASSING)
    data = tmp_path / "my faces.csv.gz"
    data.write_bytes(b"")  # only its name matters here: the notebook does not load it
    out = tmp_path / "out"
    assert cli.main(["report", "--data", str(data), "--out", str(out), "--notebooks", str(notebooks)]) == 0
    captured = capsys.readouterr()
    index = out / "my-faces" / "index.html"
    assert captured.out.strip() == f"report: {index.resolve()}"
    assert "[1/1] 01_pass.ipynb" in captured.err and "cell/s" in captured.err  # per notebook, per cell
    assert "Overall: passed" in index.read_text()
    assert f"settings {data}|quick|auto" in _outputs(out / "my-faces" / "01_pass.ipynb")  # an absolute path


def test_cli_report_failure_is_one_line_exit_1(tmp_path, capsys):
    _notebook(tmp_path / "only.ipynb", *FAILING)
    assert cli.main(["report", "--out", str(tmp_path / "out"), "--notebooks", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fervis: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("fervis: error: notebook only.ipynb failed at cell 4 of 5")
    assert "ValueError: boom 42" in lines[0] and "partial report:" in lines[0]


def test_a_kernel_that_dies_is_a_failed_cell(tmp_path, capsys):
    """A native crash (like TF's oneDNN heap corruption) kills the kernel: still one line."""
    _notebook(tmp_path / "dies.ipynb", "x = 1", "import os\nos.abort()", 'print("never printed")')
    assert cli.main(["report", "--out", str(tmp_path / "out"), "--notebooks", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fervis: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("fervis: error: notebook dies.ipynb failed at cell 4 of 5")
    assert "the kernel died" in lines[0]
    assert '<td class="failed">failed' in (tmp_path / "out" / "synthetic" / "index.html").read_text()


@pytest.mark.parametrize("argv, match", [
    (["report", "--budget", "huge"], "argument --budget: invalid choice: 'huge'"),
    (["report", "--data", "nowhere.csv"], "argument --data: 'nowhere.csv' does not exist"),
    (["report", "--model", "nowhere.keras"], "argument --model: 'nowhere.keras' is not auto, train"),
    (["report", "--model", "train:slow"], "names recipe 'slow' in 'train:slow'"),
    (["report", "--data", ""], "argument --data: must be a path, got ''"),
])
def test_cli_report_bad_arguments(capsys, tmp_path, argv, match):
    assert cli.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_demo_runs_the_report_on_the_embedded_default(tmp_path, capsys, monkeypatch):
    """``fervis demo`` = evaluate the cached model, then ``fervis report --data synthetic --budget quick``."""
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    _notebook(notebooks / "01_pass.ipynb", *PASSING)
    real_run, calls = report.run, []

    def run_on_test_notebooks(**kwargs):
        calls.append(kwargs)
        return real_run(**{**kwargs, "notebooks_dir": notebooks, "out": tmp_path / "reports"})

    class Training:  # the model's evaluation is test_cli's business; here only the report counts
        @staticmethod
        def load_or_train(dataset, recipe, progress):
            return None

        @staticmethod
        def evaluate(model, dataset, split):
            return {"accuracy": 0.5, "n": 3}

        @staticmethod
        def model_for(dataset, model):
            return None

    monkeypatch.setattr(report, "run", run_on_test_notebooks)
    monkeypatch.setattr(cli, "_keras_modules", lambda: (None, type("R", (), {"RECIPES": {"quick": 1}}), Training))
    monkeypatch.setattr(cli, "_load_data", lambda source: None)
    assert cli.main(["demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert calls == [{"data": "synthetic", "budget": "quick", "model": "auto", "out": "reports",
                      "notebooks_dir": None, "model_input": "auto", "class_order": "auto"}]
    index = tmp_path / "reports" / "synthetic" / "index.html"
    assert result["report"] == str(index.resolve()) and "Overall: passed" in index.read_text()
    assert result["model_path"] is None  # the notebooks' own "auto" model


# --------------------------------------------------------------------------- gallery

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def test_gallery_from_the_stored_notebooks(tmp_path):
    """The repository's notebooks hold executed outputs: each tagged cell yields its file."""
    import io

    from PIL import Image

    from fervis import regions

    block = report.gallery(NOTEBOOKS, tmp_path / "gallery", link="docs/gallery")
    names = [name for _, _, name, *_ in report.GALLERY]
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == sorted(names)
    for name in names:
        path = tmp_path / "gallery" / name
        if name.endswith(".png"):
            assert 0 < path.stat().st_size <= report.MAX_PNG_BYTES
            image = Image.open(io.BytesIO(path.read_bytes()))
            assert image.format == "PNG" and min(image.size) >= 100
            assert f"](docs/gallery/{name})" in block
    table = (tmp_path / "gallery" / "region_shares.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[-1] == "n"  # faces per class behind each row
    assert header[1:-1] == [r for r in regions.REGION_NAMES if r in header]  # region columns, in order
    assert len(header) >= 9
    rows = table[2:]
    classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert [r.split("|")[1].strip() for r in rows][:7] == [f"**{n}**" for n in classes]  # then "all"
    assert header[0] == "class \\ region"
    for row in rows:  # shares of each class's mass: a row sums to 1 (rounded to 2 places)
        values = [float(v) for v in row.strip("|").split("|")[1:-1]]
        assert abs(sum(values) - 1) <= 0.06
    assert "> registration of" in block  # the template's fit, measured, quoted under the region table
    headline = [line for line in block.splitlines() if line.startswith("> ") and "hardest" in line]
    assert len(headline) == 1  # the computed headline, quoted under the confusion matrix
    assert block.startswith(report.GALLERY_BEGIN) and block.endswith(report.GALLERY_END)
    assert "\n".join(table) in block
    assert "--data synthetic --budget quick" in block or "fervis report --data" in block


def test_gallery_missing_cell_is_named_and_nothing_is_written(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    for notebook in sorted({nb for nb, *_ in report.GALLERY}):
        nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
        if notebook.startswith("03"):
            for cell in nb.cells:
                cell.metadata.pop("tags", None)
        nbformat.write(nb, folder / notebook)
    with pytest.raises(ValueError, match=r"03_per_label_analysis.ipynb' must have exactly one cell tagged "
                                         r"'gallery-confusion'; it has 0"):
        report.gallery(folder, tmp_path / "gallery")
    assert not (tmp_path / "gallery").exists()
    (folder / "01_saliency_maps.ipynb").unlink()
    with pytest.raises(ValueError, match=r"no executed notebook .*01_saliency_maps.ipynb'; run `fervis report` first"):
        report.gallery(folder, tmp_path / "gallery")


def test_shrink_png_keeps_small_and_shrinks_large():
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    big = buf.getvalue()
    assert len(big) > 1_000_000
    small = report.shrink_png(big, max_bytes=200_000)
    assert len(small) <= 200_000
    image = Image.open(io.BytesIO(small))
    assert image.format == "PNG" and 0.3 < image.width / image.height * 700 / 900 < 3
    tiny = Image.new("RGB", (40, 30), "white")
    buf = io.BytesIO()
    tiny.save(buf, format="PNG")
    assert report.shrink_png(buf.getvalue()) == buf.getvalue()


def test_update_readme_replaces_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n{report.GALLERY_BEGIN}\nold\n{report.GALLERY_END}\nafter\n")
    block = f"{report.GALLERY_BEGIN}\nnew ![x](docs/gallery/a.png)\n{report.GALLERY_END}"
    report.update_readme(readme, block)
    assert readme.read_text() == f"# T\n\nbefore\n{block}\nafter\n"
    report.update_readme(readme, block)  # twice is the same
    assert readme.read_text() == f"# T\n\nbefore\n{block}\nafter\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# no markers\n")
    with pytest.raises(ValueError, match="PLAIN.md' has no <!-- gallery:begin --> ... <!-- gallery:end --> markers"):
        report.update_readme(plain, block)
    assert plain.read_text() == "# no markers\n"
    # Other markers (the ship script's card summary) leave the gallery alone.
    card = "<!-- card:begin -->\ncard v2\n<!-- card:end -->"
    readme.write_text(f"{block}\n<!-- card:begin -->\ncard v1\n<!-- card:end -->\n")
    report.update_readme(readme, card, markers=("<!-- card:begin -->", "<!-- card:end -->"))
    assert readme.read_text() == f"{block}\n{card}\n"
    with pytest.raises(ValueError, match="has no <!-- x --> ... <!-- y --> markers"):
        report.update_readme(readme, card, markers=("<!-- x -->", "<!-- y -->"))


def test_readme_gallery_is_complete_and_small():
    """README's gallery block links every GALLERY figure, each a PNG under docs/ of at most 300 KB."""
    root = NOTEBOOKS.parent
    text = (root / "README.md").read_text()
    block = text[text.index(report.GALLERY_BEGIN):text.index(report.GALLERY_END)]
    assert "--budget full" in block and "pretrained:fer2013" in block
    for _, _, name, heading, quote in report.GALLERY:
        if name.endswith(".png"):
            assert f"![{heading}](docs/gallery/{name})" in block
            path = root / "docs" / "gallery" / name
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert path.stat().st_size <= report.MAX_PNG_BYTES
        else:
            assert (root / "docs" / "gallery" / name).read_text().strip() in block
        if quote:  # the answer under the heading is quoted from the notebook, not written by hand
            assert block.split(f"**{heading}**", 1)[1].lstrip().startswith("> ")


# --------------------------------------------------------------------------- widgets in the pages

EXPLORER = '''import ipywidgets as w
import matplotlib.pyplot as plt
from fervis import widgets
out = w.Output()
widgets._show(out, plt.figure(figsize=(1, 1), dpi=20))  # as fervis's explorers show their figure
w.VBox([w.HBox([w.IntSlider(3, description="face"), w.Dropdown(options=["a", "b"], value="b", description="method")]),
        w.HTML("<b>9 faces</b>"), out])'''


def test_pages_show_each_explorer_as_its_figure_not_a_dead_widget(tmp_path):
    """An HTML page has no kernel (its sliders would redraw nothing) and widgets need a CDN: the page
    shows each explorer's saved figure under its controls' values; the notebook keeps the widget."""
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    _notebook(notebooks / "01_widgets.ipynb", EXPLORER, 'import ipywidgets as w\nw.IntSlider(1, description="alone")')
    report.run("synthetic", budget="quick", out=tmp_path / "out", notebooks_dir=notebooks, progress=False)
    folder = tmp_path / "out" / "synthetic"
    nb = nbformat.read(folder / "01_widgets.ipynb", as_version=4)
    views = [o for c in nb.cells for o in c.get("outputs", []) if report._WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 2 and nb.metadata["widgets"]  # the notebook itself is untouched
    png = next(o["data"]["image/png"] for model in nb.metadata["widgets"][report._WIDGET_STATE]["state"].values()
               if model["model_name"] == "OutputModel" for o in model["state"]["outputs"])
    page = (folder / "01_widgets.html").read_text()
    assert "widget-view+json" not in page and "widget-state+json" not in page and "unpkg.com" not in page
    assert page.count(f"data:image/png;base64,{png}") == 1
    assert "Interactive in JupyterLab; shown here: face = 3 · method = b · 9 faces." in page
    assert "An interactive widget: open the notebook in JupyterLab to use it." in page


def test_the_stored_notebooks_pages_show_their_explorers():
    """Each of the four notebooks has one explorer; its page shows the explorer's figure."""
    for path in sorted(NOTEBOOKS.glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        states = nb.metadata["widgets"][report._WIDGET_STATE]["state"].values()
        figures = [o["data"]["image/png"] for m in states if m["model_name"] == "OutputModel" for o in m["state"]["outputs"]]
        static = report._static_widgets(nb)
        shown = [o["data"]["image/png"] for c in static.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(figures) == 1 and figures[0] in shown, path.name
        assert not any(report._WIDGET_VIEW in o.get("data", {}) for c in static.cells for o in c.get("outputs", []))
        notes = [o["data"]["text/plain"] for c in static.cells for o in c.get("outputs", [])
                 if o.get("data", {}).get("text/plain", "").startswith("Interactive in JupyterLab; shown here: ")]
        assert len(notes) == 1, path.name


def test_run_refuses_an_empty_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # '' was the current folder: the report went there
    with pytest.raises(ValueError, match=r"'out' parameter of fervis.report.run must be a folder path. Got ''"):
        report.run("synthetic", out="")
    assert os.listdir(tmp_path) == []


def test_run_hands_the_kernels_an_absolute_fervis_home(tmp_path, monkeypatch):
    # The kernels run in notebooks/: a relative FERVIS_HOME must reach them resolved from here.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERVIS_HOME", "home")
    monkeypatch.setattr(report, "find_notebooks", lambda _: (_ for _ in ()).throw(RuntimeError("stop here")))
    with pytest.raises(RuntimeError, match="stop here"):
        report.run("synthetic", out=str(tmp_path / "out"))
    assert os.environ["FERVIS_HOME"] == str(tmp_path / "home")  # what the kernels inherit
