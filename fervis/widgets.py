"""ipywidgets front-ends for the notebooks (ipywidgets 8: they render in JupyterLab 4 with no
extension build step). Each widget only wires controls to fervis compute and plot functions.

Sections, one per notebook; each developer edits only their own section.
"""

from __future__ import annotations

__all__ = []


def _show(out, fig=None):
    """Make ``fig`` (a PNG of it) the one output of the Output widget ``out``, and close it.

    The outputs are set as widget state rather than captured with ``with out: display(fig)``:
    a captured display goes through the front end's Output model, and a headless client
    (nbclient, under papermill, ``nbconvert --execute`` and ``fervis report``) answers each one
    with a message on the shell channel while it is waiting there for the cell's reply; that
    hung about one run in eight of a notebook here (jupyter/nbclient#312). State goes one way.
    ``fig=None`` clears the outputs.
    """
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure  # what the inline backend draws a figure with

    if fig is None:
        out.outputs = ()
        return
    png = print_figure(fig, "png", base64=True)
    plt.close(fig)
    out.outputs = ({"output_type": "display_data", "metadata": {}, "data": {"image/png": png, "text/plain": repr(fig)}},)


# --- saliency (notebook 1) -------------------------------------------------------------

__all__ += ["saliency_explorer"]


def saliency_explorer(model, images, labels=None, methods=None, class_names=None, samples=16, noise=0.15,
                      face_idx=0):
    """Face slider x target class x method x SmoothGrad noise and samples, redrawing the map.

    Only the face shown is explained, so every change redraws in a fraction of a second
    (the traced graphs of :func:`fervis.saliency.explain` are reused).

    Parameters
    ----------
    model : keras.Model
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``, or a Dataset
    labels : int array ``(n,)``, optional
        True labels, shown in the title (taken from a Dataset).
    methods : sequence of str, optional
        Default: every method in :data:`fervis.saliency.METHODS`; ``"lime"`` (of
        :data:`fervis.saliency.ALL_METHODS`) only when asked for (a thousand forward passes a face).
    class_names : sequence of str, optional
    samples : int, default 16
    noise : float, default 0.15
    face_idx : int, default 0

    Returns
    -------
    ipywidgets.VBox
        With ``face``, ``target``, ``method``, ``noise``, ``samples`` controls, an ``update()``
        method and the last ``figure``.

    Example
    -------
    >>> saliency_explorer(session.model, session.evaluation)  # doctest: +SKIP
    """
    import ipywidgets as W

    from fervis import plots, saliency
    from fervis._checks import default_names, image_model, images_for, is_dataset, positive_int

    func = "fervis.widgets.saliency_explorer"
    if labels is None and is_dataset(images):
        labels = images.labels
    input_shape, k = image_model(model, func)
    faces = images_for(images, input_shape, func)
    if not len(faces):
        raise ValueError(f"The 'images' parameter of {func} must hold at least one face. Got 0 instead.")
    names = list(class_names or default_names(k))
    methods = list(saliency.METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in saliency.ALL_METHODS]
    if unknown or not methods:
        raise ValueError(f"The 'methods' parameter of {func} must be a non-empty list of names from "
                         f"{list(saliency.ALL_METHODS)}. Got {methods!r} instead.")
    face_idx = positive_int(face_idx, "face_idx", func, 0, len(faces) - 1)
    probs = saliency.predict(model, faces)
    face = W.IntSlider(value=int(face_idx), min=0, max=len(faces) - 1, description="face", continuous_update=False)
    target = W.Dropdown(options=[("predicted", -1)] + [(n, i) for i, n in enumerate(names)], value=-1,
                        description="class")
    method = W.Dropdown(options=methods, value=methods[0], description="method")
    noise_ = W.FloatSlider(value=float(noise), min=0.0, max=0.5, step=0.05, description="noise",
                           continuous_update=False)
    samples_ = W.IntSlider(value=int(samples), min=1, max=50, description="samples", continuous_update=False)
    out = W.Output()

    def update(*_):
        i = int(face.value)
        smooth = method.value == "smoothgrad"
        noise_.disabled = samples_.disabled = not smooth
        c = int(probs[i].argmax()) if target.value < 0 else int(target.value)
        options = {"samples": int(samples_.value), "noise": float(noise_.value)} if smooth else None
        maps = saliency.explain(model, faces[i:i + 1], method.value, class_idx=c, options=options)
        true = "" if labels is None else f"true {names[int(labels[i])]}, "
        title = f"#{i}: {true}predicted {names[int(probs[i].argmax())]} ({probs[i].max():.2f}); map for {names[c]}"
        fig = plots.saliency_panel(faces[i], maps[0], title=f"{saliency.method_label(model, method.value)}: {title}")
        _show(out, fig)
        box.figure = fig

    for control in (face, target, method, noise_, samples_):
        control.observe(update, names="value")
    box = W.VBox([W.HBox([face, target, method]), W.HBox([noise_, samples_]), out])
    box.face, box.target, box.method, box.noise, box.samples = face, target, method, noise_, samples_
    box.update, box.figure = update, None
    update()
    return box


# --- filters (notebook 2) --------------------------------------------------------------

__all__ += ["filter_explorer"]


def filter_explorer(model, dataset, layers=None, layer_name=None, steps=None, k=5, face_idx=0, seed=0):
    """Layer x filter x preset: the ascent image, the top faces and the feature map of a face.

    Results are cached: the dataset pass of :func:`fervis.filters.top_activating` runs once per
    layer (it serves every filter), an ascent once per (layer, filter, preset).

    Parameters
    ----------
    model : keras.Model
    dataset : Dataset or array (n, 48, 48)
        The faces searched for exemplars; ``face_idx`` picks the face whose map is shown.
    layers : list of str, optional
        Default: the layers :func:`fervis.filters.layer_names` lists with ``learned=True`` (the
        input's preprocessing has no filters of its own); every layer for a model without weights.
    layer_name : str, optional
        The layer shown first; default the last of ``layers``.
    steps : int, optional
        Ascent steps (the preset's default; capped by ``FERVIS_MAX_STEPS``).
    k : int, default 5
    face_idx : int, default 0
    seed : int, default 0

    Returns
    -------
    ipywidgets.VBox
        With ``layer``, ``filter``, ``preset`` controls and an ``update()`` method that redraws.

    Example
    -------
    >>> filter_explorer(session.model, session.evaluation)  # doctest: +SKIP
    """
    import ipywidgets as W

    from fervis import filters, models, plots
    from fervis._checks import faces_2d, positive_int

    if layers is None:  # a model without weights (nothing learned) offers every layer
        names = filters.layer_names(model, learned=True) or filters.layer_names(model)
    else:
        names = [models.canonical_layer_name(model, n) for n in layers]
    for name in names:
        filters.layer_width(model, name)  # a clear error for an unknown layer, before any widget
    faces = faces_2d(dataset, "fervis.widgets.filter_explorer", "dataset")
    face_idx = positive_int(face_idx, "face_idx", "fervis.widgets.filter_explorer", 0, len(faces) - 1)
    layer_name = models.canonical_layer_name(model, layer_name)
    if layer_name is not None and layer_name not in names:
        raise ValueError(
            f"The 'layer_name' parameter of fervis.widgets.filter_explorer must be one of {names}. "
            f"Got {layer_name!r} instead."
        )
    layer = W.Dropdown(options=names, value=layer_name or names[-1], description="layer")
    width = filters.layer_width(model, layer.value)
    filter_ = W.IntSlider(value=0, min=0, max=width - 1, description="filter", continuous_update=False)
    preset = W.ToggleButtons(options=["readable", "naive"], value="readable", description="preset")
    out = W.Output()
    cache = {}

    def cached(key, make):
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def update(*_):
        name, f, p = layer.value, int(filter_.value), preset.value
        ascent = cached(("ascent", name, f, p), lambda: filters.maximize(
            model, name, f, steps=steps, preset=p, dataset=faces, seed=seed))
        top = cached(("top", name), lambda: filters.top_activating(model, faces, name, None, k=k))
        spatial = name in filters.layer_names(model, spatial=True)
        maps = cached(("maps", name), lambda: filters.feature_maps(
            model, faces[face_idx:face_idx + 1], name)[0] if spatial else None)
        fig = plots.filter_panel(ascent, top, maps, faces[face_idx], f)
        _show(out, fig)
        box.figure = fig

    def on_layer(change):
        before = filter_.value
        filter_.max = filters.layer_width(model, change["new"]) - 1  # clamps the value
        if filter_.value == before:  # otherwise the slider's own event redraws
            update()

    layer.observe(on_layer, names="value")
    filter_.observe(update, names="value")
    preset.observe(update, names="value")
    box = W.VBox([W.HBox([layer, filter_]), preset, out])
    box.layer, box.filter, box.preset, box.update, box.figure = layer, filter_, preset, update, None
    update()
    return box

# --- labels (notebook 3) ---------------------------------------------------------------

__all__ += ["confusion_browser"]


def confusion_browser(model, images, y_true, probs, true=None, predicted=None, method="gradient",
                      class_names=None):
    """Pick a confusion cell with two dropdowns and browse its faces with their saliency.

    Each face shows saliency for the true and for the predicted class and their difference
    (:func:`fervis.labels.cell_saliency`); maps are computed for the face shown only.

    Parameters
    ----------
    model : keras.Model
    images : array ``(n, 48, 48)`` or Dataset
    y_true : int array ``(n,)`` or Dataset
    probs : float array ``(n, k)``
        The model's probabilities for ``images``.
    true, predicted : int or str, optional
        The cell shown first; default: the most-confused pair by rate.
    method : str, default "gradient"
        A method of :func:`fervis.saliency.explain`.
    class_names : sequence of str, optional

    Returns
    -------
    ipywidgets.VBox
        With ``true``, ``predicted`` (dropdowns), ``face`` (slider) and ``update()``; an empty
        cell shows a message instead of faces.

    Example
    -------
    >>> confusion_browser(session.model, faces, faces.labels, probs, "disgust", "angry")  # doctest: +SKIP
    """
    import ipywidgets as W
    import numpy as np

    from fervis import labels, plots
    from fervis._checks import class_indices, class_labels, default_names, face_pixels, probabilities

    func = "fervis.widgets.confusion_browser"
    names = list(class_names or default_names(np.asarray(probs).shape[-1]))
    faces = face_pixels(images, func)[..., 0]
    probs = probabilities(probs, func, len(faces))
    y_true = class_labels(y_true, len(faces), len(names), func)
    if true is None or predicted is None:
        pairs = labels.confused_pairs(y_true, probs, top=1, class_names=names)
        true, predicted = (pairs.at[0, "true"], pairs.at[0, "predicted"]) if len(pairs) else (names[0], names[0])
    t = class_indices(true, 1, func, names, "true")[0]
    p = class_indices(predicted, 1, func, names, "predicted")[0]
    true_dd = W.Dropdown(options=names, value=names[t], description="true")
    pred_dd = W.Dropdown(options=names, value=names[p], description="predicted")
    face = W.IntSlider(value=0, min=0, max=0, description="face", continuous_update=False)
    info = W.HTML()
    out = W.Output()
    state = {"cell": np.zeros(0, int)}

    def draw(*_):
        cell = state["cell"]
        if not len(cell):
            _show(out)
            box.figure = None
            return
        i = int(cell[face.value])
        maps = labels.cell_saliency(model, faces[i:i + 1], true_dd.value, pred_dd.value, method=method,
                                    class_names=names)
        title = f"#{i}: p({pred_dd.value}) {probs[i, names.index(pred_dd.value)]:.2f}"
        fig = plots.confusion_cell_grid(faces[i:i + 1], *maps, true_dd.value, pred_dd.value, titles=[title])
        _show(out, fig)
        box.figure = fig

    def update(*_):
        try:
            state["cell"] = labels.confusion_cell(y_true, probs, true_dd.value, pred_dd.value, class_names=names)
            info.value = f"{len(state['cell'])} faces of true class {true_dd.value} predicted {pred_dd.value}"
        except ValueError as err:
            state["cell"] = np.zeros(0, int)
            info.value = str(err)
        before = face.value
        face.max = max(len(state["cell"]) - 1, 0)
        face.value = 0
        if face.value == before:  # otherwise the slider's own event redraws
            draw()

    true_dd.observe(update, names="value")
    pred_dd.observe(update, names="value")
    face.observe(draw, names="value")
    box = W.VBox([W.HBox([true_dd, pred_dd]), face, info, out])
    box.true, box.predicted, box.face, box.update, box.info, box.figure = true_dd, pred_dd, face, update, info, None
    update()
    return box


# --- monitoring (notebook 4) -----------------------------------------------------------

__all__ += ["probe_browser"]


def probe_browser(probe_history):
    """An epoch slider over the probe faces' saliency maps of a monitored run.

    Parameters
    ----------
    probe_history : fervis.monitoring.ProbeHistory
        From :func:`fervis.monitoring.probe_maps`.

    Returns
    -------
    ipywidgets.VBox
        With an ``epoch`` slider (counted from 1), a ``summary`` label (mean ρ with the
        previous epoch, the region holding most map mass) and an ``update()`` method.

    Example
    -------
    >>> probe_browser(monitoring.probe_maps(run))  # doctest: +SKIP
    """
    import ipywidgets as W
    import numpy as np

    from fervis import plots

    ph = probe_history
    epochs = [int(e) for e in np.asarray(getattr(ph, "epochs", []))]
    if not epochs:
        raise ValueError(
            "The 'probe_history' parameter of fervis.widgets.probe_browser must hold at least one monitored "
            f"epoch (see fervis.monitoring.probe_maps). Got {type(ph).__name__} with none."
        )
    slider = W.SelectionSlider(options=[(str(e + 1), e) for e in epochs], value=epochs[-1], description="epoch",
                               continuous_update=False)
    summary = W.Label()
    out = W.Output()
    drift = ph.drift

    def update(*_):
        i = epochs.index(slider.value)
        shares = np.nanmean(ph.shares[i], axis=0)
        top = int(np.nanargmax(shares)) if np.isfinite(shares).any() else 0
        rho = np.nanmean(drift[i]) if np.isfinite(drift[i]).any() else float("nan")
        summary.value = (f"epoch {slider.value + 1}: mean ρ with the previous epoch "
                         f"{'n/a' if not np.isfinite(rho) else f'{rho:.2f}'}; most mass on "
                         f"{ph.probes.region_names[top]} ({shares[top]:.0%})")
        fig = plots.probe_maps_grid(ph, epochs=[slider.value])
        _show(out, fig)
        box.figure = fig

    slider.observe(update, names="value")
    box = W.VBox([slider, summary, out])
    box.epoch, box.summary, box.update, box.figure = slider, summary, update, None
    update()
    return box
