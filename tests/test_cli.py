"""Tests for the fervis command line: commands, --json contract, exit codes, error lines."""

import json
import os
import pathlib
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from fervis import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fer_csv(synthetic_small, tmp_path_factory):
    """A small file in FER2013's CSV layout, with synthetic faces (no real FER2013 data)."""
    subset = synthetic_small.take(np.r_[0:150, 700:770])
    path = tmp_path_factory.mktemp("csv") / "faces.csv"
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for image, label, split in zip(subset.images, subset.labels, subset.splits):
            f.write(f"{label},{' '.join(map(str, image.ravel()))},{split}\n")
    return path


@pytest.fixture(scope="module")
def trained_run(fer_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--data", str(fer_csv), "--arch", "tiny", "--epochs", "2", "--recipe", "tiny",
                     "--out", str(out)]) == 0
    return out


def _error_line(capsys, argv):
    """Run ``fervis argv``, expect exit status 2, and return its single stderr line."""
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fervis: error: ")
    assert captured.out == ""
    return lines[0]


# --------------------------------------------------------------------------- data inspect


def test_data_inspect_text(capsys, fer_csv):
    assert cli.main(["data", "inspect", str(fer_csv)]) == 0
    out = capsys.readouterr().out
    assert "images: 220" in out and "Training" in out and "PublicTest" in out and "problems:" in out
    assert "disgust" in out and "pixels: mean" in out


def test_data_inspect_json(capsys, fer_csv, synthetic_small):
    assert cli.main(["data", "inspect", str(fer_csv), "--json"]) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    assert info["n_images"] == 220
    expected = np.bincount(synthetic_small.labels[:150], minlength=7)
    assert [info["counts"]["Training"][c] for c in synthetic_small.class_names] == expected.tolist()
    assert set(info["pixels"]) == {"mean", "std", "min", "max"}
    assert isinstance(info["problems"], list)


# --------------------------------------------------------------------------- train


def test_train_writes_model_and_history(capsys, trained_run):
    assert (trained_run / "model.keras").exists() and (trained_run / "checkpoint.keras").exists()
    history = (trained_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 3


def test_train_refuses_existing_run_without_resume(capsys, fer_csv, trained_run):
    argv = ["train", "--data", str(fer_csv), "--arch", "tiny", "--epochs", "2", "--recipe", "tiny",
            "--out", str(trained_run)]
    assert "add --resume to continue it" in _error_line(capsys, argv)
    assert cli.main(argv + ["--resume"]) == 0  # the run is complete: nothing left to train
    out = capsys.readouterr().out
    assert "trained tiny with recipe 'tiny' for 2 epochs" in out
    other_arch = ["train", "--data", str(fer_csv), "--arch", "compact", "--epochs", "2", "--recipe", "tiny",
                  "--out", str(trained_run), "--resume"]
    assert "trained with another recipe (fields ['arch'] differ" in _error_line(capsys, other_arch)


@pytest.mark.parametrize("argv, match", [
    (["train", "--data", "synthetic", "--out", "x", "--epochs", "0"], "argument --epochs: must be a positive"),
    (["train", "--data", "synthetic", "--out", "x", "--epochs", "two"], "argument --epochs: must be a positive"),
    (["train", "--out", "x"], "the following arguments are required: --data"),
    (["train", "--data", "missing.csv", "--out", "x"], "'missing.csv' instead, which does not exist"),
])
def test_train_bad_arguments(capsys, argv, match):
    assert match in _error_line(capsys, argv)


def test_train_unknown_arch_and_recipe(capsys, fer_csv, tmp_path):
    base = ["train", "--data", str(fer_csv), "--out", str(tmp_path / "r")]
    assert "argument --arch: invalid choice: 'resnet' (choose from tiny, compact, small, vgg, vgg-wide)" in _error_line(
        capsys, base + ["--arch", "resnet"])
    assert "argument --recipe: invalid choice: 'slow'" in _error_line(capsys, base + ["--recipe", "slow"])


def test_train_help_names_every_architecture_and_recipe(capsys):
    """The parser stays Keras-free, so its help names them by hand: this keeps it in step."""
    from fervis import models, recipes

    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for names in (models.ARCHITECTURES, tuple(recipes.RECIPES)):
        assert ", ".join(names[:-1]) + " or " + names[-1] + " (default" in help_text


# --------------------------------------------------------------------------- evaluate


def test_evaluate_json_contract(capsys, fer_csv, trained_run, synthetic_small):
    model = str(trained_run / "model.keras")
    assert cli.main(["evaluate", "--model", model, "--data", str(fer_csv), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # exactly one JSON object: the whole of stdout parses
    assert captured.out.count("\n") == 1
    assert result["n"] == 70 and result["split"] == "PublicTest" and result["tta"] == "none"
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (7, 7)
    truth = synthetic_small.labels[700:770]
    assert cm.sum(axis=1).tolist() == np.bincount(truth, minlength=7).tolist()  # rows: true class
    assert result["accuracy"] == pytest.approx(np.trace(cm) / 70)
    assert list(result["recall"]) == list(synthetic_small.class_names)
    assert all(r is None or 0 <= r <= 1 for r in result["recall"].values())
    # every rate carries its n and a 95 % interval around it
    assert result["support"] == dict(zip(synthetic_small.class_names, cm.sum(axis=1).tolist()))
    low, high = result["accuracy_interval"]
    assert low < result["accuracy"] < high
    for name, (low, high) in result["recall_interval"].items():
        if result["support"][name]:
            assert low <= result["recall"][name] <= high and high - low > 0
        else:
            assert (low, high, result["recall"][name]) == (None, None, None)


def test_evaluate_text_all_splits_and_tta(capsys, fer_csv, trained_run):
    model = str(trained_run / "model.keras")
    assert cli.main(["evaluate", "--model", model, "--data", str(fer_csv), "--split", "all", "--tta", "flip"]) == 0
    out = capsys.readouterr().out
    assert "n=220" in out and "tta flip" in out and "confusion matrix" in out and "recall per class" in out
    assert "95 % interval" in out and "nan" not in out.lower()
    recall_lines = out.split("recall per class")[1].split("confusion matrix")[0].strip().splitlines()[1:]
    assert len(recall_lines) == 7 and all(re.search(r"\(0\.\d{3}-[01]\.\d{3}, n=\d+\)$", line) for line in recall_lines)
    # PublicTest of this file has no disgust face: a dash and why, never nan
    assert cli.main(["evaluate", "--model", model, "--data", str(fer_csv)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"disgust +— +\(no faces of this class in the split\)", out) and "nan" not in out.lower()


def test_evaluate_bad_files(capsys, fer_csv, tmp_path, monkeypatch):
    from fervis import models

    evil = tmp_path / "model.keras"
    evil.write_bytes(pickle.dumps({"a": 1}))
    line = _error_line(capsys, ["evaluate", "--model", str(evil), "--data", str(fer_csv)])
    assert "Python pickle; fervis never unpickles" in line
    assert "does not exist" in _error_line(capsys, ["evaluate", "--model", str(tmp_path / "no.keras"),
                                                    "--data", str(fer_csv)])
    five = tmp_path / "five.keras"
    models.build("tiny", num_classes=5, seed=0).save(five)
    assert "outputs 5 classes, but the data has 7 classes" in _error_line(
        capsys, ["evaluate", "--model", str(five), "--data", str(fer_csv)])
    monkeypatch.setattr(models, "_PRETRAINED_DIR", tmp_path / "none")
    assert "pretrained model 'fer2013' is not installed" in _error_line(
        capsys, ["evaluate", "--model", "pretrained:fer2013", "--data", str(fer_csv)])


def test_evaluate_bad_split_and_unlabelled(capsys, fer_csv, trained_run, tmp_path, synthetic_small):
    model = str(trained_run / "model.keras")
    line = _error_line(capsys, ["evaluate", "--model", model, "--data", str(fer_csv), "--split", "PrivateTest"])
    # The command line's spelling of every split is `all`, not the library's None.
    assert "argument --split: 'PrivateTest' is not a split" in line and "(choose from PublicTest, Training, all)" in line
    unlabeled = tmp_path / "test.csv"
    with open(unlabeled, "w") as f:  # Kaggle's test.csv layout: pixels only
        f.write("pixels\n")
        for image in synthetic_small.images[:5]:
            f.write(" ".join(map(str, image.ravel())) + "\n")
    line = _error_line(capsys, ["evaluate", "--model", model, "--data", str(unlabeled), "--split", "all"])
    assert "unlabelled" in line and "evaluate needs labels" in line
    assert "argument --tta: invalid choice: 'rotate'" in _error_line(
        capsys, ["evaluate", "--model", model, "--data", str(fer_csv), "--tta", "rotate"])


# --------------------------------------------------------------------------- demo, top level


def test_demo_json_then_cached(capsys):
    assert cli.main(["demo", "--recipe", "tiny", "--json", "--no-report"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["split"] == "PublicTest" and result["n"] == 1500 and 0 <= result["accuracy"] <= 1
    assert "epoch 1/2" in captured.err  # progress goes to stderr
    assert pathlib.Path(result["model_path"]).exists()
    assert cli.main(["demo", "--recipe", "tiny", "--no-report"]) == 0  # second run: from the cache, no training
    captured = capsys.readouterr()
    assert "epoch 1/2" not in captured.err and "accuracy" in captured.out


@pytest.mark.parametrize("argv, match", [
    ([], "the following arguments are required: COMMAND"),
    (["fly"], "argument COMMAND: invalid choice: 'fly'"),
    (["data"], "the following arguments are required: SUBCOMMAND"),
    (["evaluate", "--data", "synthetic"], "the following arguments are required: --model"),
    (["demo", "--recipe", "slow"], "argument --recipe: invalid choice: 'slow'"),
])
def test_bad_commands(capsys, argv, match):
    assert match in _error_line(capsys, argv)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("fervis ")


def _fervis(*args, cwd=None):
    script = pathlib.Path(sys.executable).parent / "fervis"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fervis.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command must stay quiet on its own
    return subprocess.run(command + list(args), capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def test_console_script_error_is_one_line_without_traceback(tmp_path, fer_csv):
    evil = tmp_path / "model.h5"
    evil.write_bytes(pickle.dumps([1, 2, 3]))
    proc = _fervis("evaluate", "--model", str(evil), "--data", str(fer_csv), "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervis: error: Cannot load model file"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_is_fast_and_tensorflow_free():
    code = ("import sys, time; t = time.perf_counter(); import fervis.cli; "
            "print(time.perf_counter() - t, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    seconds, tf_loaded, keras_loaded = proc.stdout.split()
    assert tf_loaded == "False" and keras_loaded == "False"
    assert float(seconds) < 1.0


# --------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("argv", [
    ["report", "--data", "nowhere.csv"],
    ["report", "--model", "nowhere.keras"],
    ["report", "--model", "train:slow"],
    ["report", "--out", ""],
])
def test_report_errors_are_one_line_without_tensorflow_text(argv, tmp_path):
    proc = _fervis(*argv, cwd=tmp_path)  # '' was the current folder: a report went there
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervis: error: "), proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, match", [
    (["data", "inspect", ""], "argument SOURCE: must be a path, got ''"),
    (["train", "--data", "synthetic", "--out", ""], "argument --out: must be a path, got ''"),
    (["train", "--data", "", "--out", "x"], "argument --data: must be a path, got ''"),
    (["evaluate", "--model", "", "--data", "synthetic"], "argument --model: must be a path, got ''"),
])
def test_empty_paths_are_refused(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    assert match in _error_line(capsys, argv)
    assert os.listdir(tmp_path) == []


def test_second_train_into_one_out_is_refused_naming_the_other_run(capsys, fer_csv, tmp_path):
    from fervis import training

    argv = ["train", "--data", str(fer_csv), "--arch", "tiny", "--epochs", "1", "--recipe", "tiny",
            "--out", str(tmp_path)]
    with training._run_lock(tmp_path, "fervis train"):  # as a run in another process holds it
        line = _error_line(capsys, argv)
    assert f"names '{tmp_path}', where another training run is writing (process {os.getpid()}" in line


def test_train_without_validation_prints_no_nan(capsys, fer_csv, tmp_path):
    lines = fer_csv.read_text().splitlines()
    only_train = tmp_path / "train.csv"
    only_train.write_text("\n".join(line for line in lines if not line.endswith("PublicTest")) + "\n")
    argv = ["train", "--data", str(only_train), "--arch", "tiny", "--epochs", "1", "--recipe", "tiny",
            "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "for 1 epoch on" in out and "loss " in out and "nan" not in out.lower() and "val_" not in out



def test_inspect_prints_a_non_utf8_file_name(capsys, fer_csv, tmp_path):
    path = os.path.join(os.fsencode(tmp_path), b"faces\xff.csv")
    with open(path, "wb") as f:
        f.write(fer_csv.read_bytes())
    assert cli.main(["data", "inspect", os.fsdecode(path)]) == 0  # capsys' stdout is strict UTF-8
    assert "faces\ufffd.csv" in capsys.readouterr().out
