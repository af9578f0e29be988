"""All drawing in fervis, one module per question, re-exported here so ``plots.x`` works for every
public name. Every function takes computed values (arrays, tables, results of the question modules)
and ``ax=None`` (or ``fig=None``), draws, and returns the axes (or figure); none computes what a
question module should, none calls ``plt.show()`` or ``savefig()``, and none imports a question module.

- :mod:`fervis.plots.faces`: faces as they are (``show_face``, ``face_grid``);
- :mod:`fervis.plots.saliency`: notebook 1 (what :mod:`fervis.saliency` and :mod:`fervis.regions` compute);
- :mod:`fervis.plots.filters`: notebook 2 (:mod:`fervis.filters`);
- :mod:`fervis.plots.labels`: notebook 3 (:mod:`fervis.labels`);
- :mod:`fervis.plots.monitoring`: notebook 4 (:mod:`fervis.monitoring`);
- ``fervis.plots._common``: the primitives they share, one of each: a face (with a map or RGBA image
  over it), a bare map, a grid of axes, row labels (wrapped to their row's height), a degenerate-map
  mark, a receptive-field box.
"""

from __future__ import annotations

from fervis.plots import faces as _faces
from fervis.plots import filters as _filters
from fervis.plots import labels as _labels
from fervis.plots import monitoring as _monitoring
from fervis.plots import saliency as _saliency
from fervis.plots.faces import face_grid, show_face
from fervis.plots.filters import ascent_grid, compare_presets, exemplar_grid, feature_map_grid, filter_panel
from fervis.plots.labels import (
    ambiguous_grid,
    class_distribution_bars,
    class_metric_bars,
    confusion_cell_grid,
    confusion_heatmap,
    embedding_scatter,
    lime_examples,
    lime_grid,
    lime_overlay,
    reliability_diagram,
    region_share_heatmap,
    support_recall_scatter,
)
from fervis.plots.monitoring import explanation_drift, probe_maps_grid, training_curves, training_dashboard
from fervis.plots.saliency import (
    class_mean_grid,
    cue_bars,
    faithfulness_curves,
    randomization_strip,
    region_template,
    registration,
    saliency_gallery,
    saliency_panel,
    table_heatmap,
)

__all__ = [*_faces.__all__, *_saliency.__all__, *_filters.__all__, *_labels.__all__, *_monitoring.__all__]
