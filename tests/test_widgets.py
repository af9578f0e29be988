"""The widgets under a headless notebook client (papermill, nbconvert --execute, fervis report).

nbclient stands in for a front end's Output widget: each display captured by ``with out:`` makes
it send the widget's state back on the shell channel while it waits there for the cell's reply,
and that hung one run in eight of notebook 2 (jupyter/nbclient#312). fervis's widgets set their
Output's state instead, so nbclient never has to send anything.
"""

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.mark.slow
def test_widgets_under_nbclient_send_nothing_back_and_keep_their_figure(tiny_model, synthetic_small, tmp_path,
                                                                        monkeypatch):
    from nbclient.output_widget import OutputWidget

    model_path, faces_path = tmp_path / "tiny.keras", tmp_path / "faces.npy"
    tiny_model.save(model_path)
    np.save(faces_path, synthetic_small.subset("PublicTest").images[:40])
    setup = (f"import keras, numpy as np\nfrom fervis import widgets\n"
             f"model = keras.models.load_model({str(model_path)!r})\nfaces = np.load({str(faces_path)!r})")
    ours = ("explorer = widgets.filter_explorer(model, faces, layers=['block1_conv', 'block2_act'], steps=2, k=2)\n"
            "explorer.filter.value = 3\nsaliency = widgets.saliency_explorer(model, faces[:3])\n"
            "saliency.face.value = 2\ndisplay(explorer, saliency)")
    # The pattern fervis avoids, in the same kernel: proves the counter below would see a send.
    captured = ("import ipywidgets as W, matplotlib.pyplot as plt\nout = W.Output()\ndisplay(out)\n"
                "with out:\n    fig, ax = plt.subplots(); ax.plot([0, 1]); display(fig); plt.close(fig)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (setup, ours, captured)])

    sends, current = [], {}
    original_execute = nbclient.NotebookClient.async_execute_cell

    async def tracking_execute(self, cell, cell_index, *args, **kwargs):
        current["cell"] = cell_index
        return await original_execute(self, cell, cell_index, *args, **kwargs)

    original_sync = OutputWidget.sync_state
    monkeypatch.setattr(nbclient.NotebookClient, "async_execute_cell", tracking_execute)
    monkeypatch.setattr(OutputWidget, "sync_state", lambda self: (sends.append(current["cell"]), original_sync(self)))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, startup_timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    assert 1 not in sends, f"fervis's widgets made nbclient send widget state {sends.count(1)} times"
    assert 2 in sends  # the captured display did: the counter works
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    images = [o for s in states if s["model_name"] == "OutputModel" for o in s["state"].get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # both explorers' figures, saved with the notebook (what a report renders)
