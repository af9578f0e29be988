"""Shared fixtures: a small synthetic dataset and tiny models, built once per session."""

import os
import pathlib
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# Iterative methods read their step caps from these, so the suite stays fast.
os.environ.setdefault("FERVIS_MAX_STEPS", "16")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(autouse=True, scope="session")
def _fervis_home(tmp_path_factory):
    """Keep caches of the test session out of the user's cache directory."""
    if "FERVIS_HOME" not in os.environ:
        os.environ["FERVIS_HOME"] = str(tmp_path_factory.mktemp("fervis_home"))
    yield


@pytest.fixture(scope="session")
def synthetic_small():
    """A small labelled synthetic dataset: 700 Training + 280 PublicTest faces with regions."""
    from fervis import synthetic

    return synthetic.make_dataset(n_train=700, n_test=280, seed=123)


@pytest.fixture(scope="session")
def tiny_model(synthetic_small):
    """The ``tiny`` architecture trained on ``synthetic_small`` (about 75 % on its PublicTest, ~10 s)."""
    import keras

    from fervis import models, recipes

    keras.utils.set_random_seed(0)
    model = models.build("tiny", seed=0)
    train = synthetic_small.subset("Training")
    recipe = recipes.get("tiny").replace(epochs=15)
    steps = int(np.ceil(len(train) / recipe.batch_size))
    trainer = recipes.compile_for_training(model, recipe, steps)
    trainer.fit(train.x(), keras.utils.to_categorical(train.labels, 7), batch_size=recipe.batch_size,
                epochs=recipe.epochs, verbose=0)
    return model


@pytest.fixture(scope="session")
def residual_model():
    """A residual CNN whose 1x1 stride-2 shortcut on an even 8-channel map crashes TF 2.21's
    oneDNN kernels under *eager* input gradients. Every fervis method must survive it. Its weight
    gradient crashes even in a graph: freeze ``shortcut_conv`` before training it."""
    import keras

    # Seeded initialisers: a session fixture built after other tests would otherwise get weights
    # from whatever the global RNG holds by then (a map that ReLU zeroes made one test flaky).
    def init(i):
        return {"kernel_initializer": keras.initializers.GlorotUniform(seed=i)}

    inputs = keras.Input((48, 48, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem_conv", **init(1))(x)
    shortcut = keras.layers.Conv2D(8, 1, strides=2, name="shortcut_conv", **init(2))(x)
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="res_conv1", **init(3))(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="res_conv2", **init(4))(y)
    x = keras.layers.Activation("relu", name="res_out")(keras.layers.Add(name="res_add")([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(7, activation="softmax", name="predictions", **init(5))(x)
    return keras.Model(inputs, outputs, name="residual")


@pytest.fixture(scope="session")
def fer2013_path():
    path = os.environ.get("FERVIS_FER2013")
    if not path:
        pytest.skip("FERVIS_FER2013 is not set: no real FER2013 file to test on")
    if not os.path.exists(path):
        pytest.fail(f"FERVIS_FER2013={path!r} does not exist")
    return path


@pytest.fixture
def run_notebook():
    """``run_notebook(name, out, parameters)``: execute ``notebooks/<name>`` with papermill into
    ``out`` and return ``out``. Each cell may take 600 s, so a cell that hangs fails its test
    rather than running into the CI time limit."""
    import pathlib

    papermill = pytest.importorskip("papermill")
    notebooks = pathlib.Path(__file__).resolve().parents[1] / "notebooks"

    def run(name, out, parameters):
        papermill.execute_notebook(str(notebooks / name), str(out), parameters=parameters, kernel_name="python3",
                                   cwd=str(notebooks), progress_bar=False, execution_timeout=600)
        return out

    return run


def _zoo():
    """Small architectures, one per way a network places its last rectified feature map, each with the
    layer the CAM methods must default to (``fervis.models.cam_layers``)."""
    import keras

    L = keras.layers

    def head(x, inputs, name):
        x = L.GlobalAveragePooling2D(name="gap")(x)
        return keras.Model(inputs, L.Dense(7, activation="softmax", name="predictions")(x), name=name)

    def stem(name):
        inputs = keras.Input((48, 48, 1), name="pixels")
        return inputs, L.Rescaling(1 / 255.0, name="scale")(inputs)

    zoo = {}
    keras.utils.set_random_seed(0)
    # Batch norm with separate activation layers, the fervis vgg pattern.
    inputs, x = stem("bn_separate")
    for i in (1, 2):
        x = L.Conv2D(8 * i, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = L.BatchNormalization(name=f"bn{i}")(x)
        x = L.Activation("relu", name=f"act{i}")(x)
        x = L.MaxPooling2D(2, name=f"pool{i}")(x)
    zoo["bn_separate"] = (head(x, inputs, "bn_separate"), "act2")
    # The activation inside the convolution.
    inputs, x = stem("act_inside")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    zoo["act_inside"] = (head(x, inputs, "act_inside"), "conv2")
    # A LeakyReLU layer after a linear convolution, then dropout (no layer of its own for CAMs).
    inputs, x = stem("leaky")
    x = L.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = L.LeakyReLU(negative_slope=0.1, name="leaky1")(x)
    x = L.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = L.LeakyReLU(negative_slope=0.1, name="leaky2")(x)
    x = L.SpatialDropout2D(0.1, name="drop")(x)
    zoo["leaky"] = (head(x, inputs, "leaky"), "leaky2")
    # All-convolutional: a 1x1 convolution with one channel per class before global pooling.
    inputs, x = stem("all_conv")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="features")(x)
    x = L.Conv2D(7, 1, name="classifier")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    zoo["all_conv"] = (keras.Model(inputs, L.Activation("softmax", name="probs")(x), name="all_conv"), "features")
    # A nested backbone: the feature extractor is a model inside the model.
    inner = keras.Input((48, 48, 1), name="backbone_in")
    y = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="bb_conv1")(inner)
    y = L.BatchNormalization(name="bb_bn1")(y)
    y = L.ReLU(name="bb_relu1")(y)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="bb_conv2")(y)
    y = L.BatchNormalization(name="bb_bn2")(y)
    y = L.ReLU(name="bb_relu2")(y)
    backbone = keras.Model(inner, y, name="backbone")
    inputs, x = stem("nested")
    zoo["nested"] = (head(backbone(x), inputs, "nested"), "bb_relu2")
    return zoo


@pytest.fixture(scope="session")
def zoo():
    """``name -> (model, expected default CAM layer)`` for a zoo of small untrained architectures:
    batch norm with separate activations, activation inside the convolution, LeakyReLU layers, an
    all-convolutional net with a 1x1 classifier convolution, a nested backbone. The residual block is
    the ``residual_model`` fixture (its CAM layer: ``res_out``)."""
    return _zoo()



@pytest.fixture
def notebook_text():
    """``notebook_text(path)``: every text an executed notebook shows (streams and plain-text results),
    joined, after asserting that no line shows inf or NaN as a result (a reader must never see one)."""
    import re

    import nbformat

    undefined = re.compile(r"(?<![\w.])(-?inf|nan|NaN|-?Infinity)(?![\w])")

    def read(path):
        nb = nbformat.read(str(path), as_version=4)
        parts = []
        for cell in nb.cells:
            for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
                text, plain = output.get("text", ""), output.get("data", {}).get("text/plain", "")
                parts += [text if output.get("name") != "stderr" else "", plain]
        text = "\n".join(parts)
        shown = [line for line in text.splitlines() if undefined.search(line)]
        assert not shown, f"{path} shows inf or NaN: {shown[:5]}"
        return text

    return read


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_script(script, *args, timeout=180):
    """Run a Python script in a fresh process (its own TensorFlow runtime), fervis importable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_script():
    """``run_script(script, *args, timeout=180)``: a script in a fresh process -> ``CompletedProcess``."""
    return _run_script


# A tiny training run (128 random faces, balanced labels) whose process dies as if killed: no cleanup, no
# flushing, no exception handling, once `done` epochs are checkpointed. `where`: "mid_epoch" (at the first
# batch of the next epoch), "epoch_end" (at the end of epoch `done`, after its checkpoint callback) or
# "after_checkpoint" (right after the checkpoint file is in place, before anything else is written).
KILLED_RUN = """
    import os, sys
    import numpy as np
    import keras
    from fervis import models, recipes, training

    out_dir, where, done, epochs, teacher = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (128, 48, 48)).astype(np.uint8), np.arange(128) % 7

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if where == "mid_epoch" and self.epoch == done and batch == 0:
                os._exit(17)
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_epoch_end(self, epoch, logs=None):
            if where == "epoch_end" and epoch + 1 == done:
                os._exit(17)

    if where == "after_checkpoint":
        write_checkpoint = training._write_checkpoint

        def write_then_die(train_model, out, state):
            write_checkpoint(train_model, out, state)
            if state["epoch"] == done:
                os._exit(17)

        training._write_checkpoint = write_then_die

    recipe = recipes.get("tiny").replace(epochs=epochs)
    if teacher:
        recipe = recipe.replace(teacher=teacher, distill=0.5)
    training.fit(models.build("tiny", seed=0), (images, labels), recipe, out_dir=out_dir, callbacks=[Kill()],
                 verbose=False)
"""


@pytest.fixture(scope="session")
def killed_run():
    """``killed_run(out_dir, where, done, epochs, teacher="")``: :data:`KILLED_RUN` in a fresh process; the
    process exits with 17 when it was killed as planned."""
    def run(out_dir, where, done, epochs, teacher=""):
        return _run_script(KILLED_RUN, out_dir, where, done, epochs, teacher)

    return run
