"""ipywidgets front-ends for the notebooks (ipywidgets 8: they render in JupyterLab 4 with no
extension build step). Each widget only wires controls to fervis compute and plot functions.

Sections, one per notebook; each developer edits only their own section.
"""

from __future__ import annotations

__all__ = []

# --- saliency (notebook 1) -------------------------------------------------------------

# --- filters (notebook 2) --------------------------------------------------------------

# --- labels (notebook 3) ---------------------------------------------------------------

# --- monitoring (notebook 4) -----------------------------------------------------------
