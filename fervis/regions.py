"""Named face regions of a 48x48 face and where an explanation's mass falls among them.

Synthetic faces carry their own region map (:mod:`fervis.synthetic`); real FER2013 crops do
not, so :func:`template` gives one map for all of them. FER2013's faces were registered by
its authors (Goodfellow et al., "Challenges in Representation Learning", 2013) so that each
face is roughly centred and fills the crop, and one template fits most of them to within a
few pixels; per-image landmarks would do better, at the cost of a landmark model.

:func:`shares` turns saliency maps into the share of their mass in each region, either raw
(shares sum to 1) or divided by the region's share of the area: a *concentration* of 1 means
"no more than a uniform map would put there", 3 means three times that. The pointing-game
idea (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016) measured
against ground-truth regions, as in Arras et al. ("CLEVR-XAI", Information Fusion 2022).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fervis._checks import is_dataset, positive_int, region_ids, require_dataset
from fervis.constants import IMAGE_SIZE
from fervis.stats import wilson

__all__ = ["REGION_NAMES", "MIN_FIT", "Registration", "template", "for_dataset", "names_for", "registration",
           "area_shares", "shares"]

#: Region ids are indices into this tuple, in synthetic maps and in :func:`template` alike.
REGION_NAMES = ("background", "hair", "forehead", "brows", "eyes", "nose", "cheeks", "mouth", "occluder")
_R = {name: i for i, name in enumerate(REGION_NAMES)}

# The template's geometry, read off the mean face of FER2013 (all 32,298 Training and
# PublicTest images, computed locally; no data is stored here). (row, col), 0-based:
# - eyes: the two darkest blobs, centred at row 17-18, cols 14-15 and 32-33 (mean grey 114
#   against 161 on the cheeks below), about 12 px wide and 6 px tall;
# - brows: the dark band just above them, rows 11-14 (the brow ridge merges into the eye blob
#   on the mean face, so the band is set by the usual brow-to-eye distance of 5 px);
# - nose: the bright bridge between the eyes (cols 21-26) down to the nostrils, the darker
#   row 31-32 (137) below the bright tip at row 26 (165), widening to cols 18-29;
# - mouth: the dark band centred at row 38-39 (124 against 142 at row 30), cols 13-34;
# - face outline: half-way between cheek (157) and border (120) at cols 7 and 40 on rows
#   24-30; the forehead reaches the top rows between cols 16 and 31, darker corners beside;
# - cheeks: the bright skin beside the nose and mouth (rows 22-30) and, as in the synthetic
#   maps, the rest of the lower face (chin); forehead: the face skin above the eye line.
# Outside the face: hair above row 24 (the corners and sides of the crop at eye level are
# mostly hair), background below (neck, shoulders, whatever was behind).
_FACE = (23.0, 23.5, 25.0, 18.0)  # centre row, centre col, half-height, half-width
_BROWS = (12.5, (14.5, 32.5), 2.2, 8.0)
_EYES = (17.5, (14.5, 32.5), 3.2, 6.5)
_NOSE = (15, 32, 2.5, 5.5)  # first row, last row, half-width at the top and at the bottom
_MOUTH = (38.0, 23.5, 4.5, 10.5)
_EYE_LINE = 18  # face skin above this row is forehead, below it cheeks
_HAIR_BELOW = 24  # outside the face: hair above this row, background from it down


@functools.lru_cache(maxsize=1)
def _template():
    rows, cols = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)

    def ellipse(cy, cx, ry, rx):
        return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0

    out = np.where(rows < _HAIR_BELOW, _R["hair"], _R["background"]).astype(np.uint8)
    face = ellipse(*_FACE)
    out[face] = np.where(rows < _EYE_LINE, _R["forehead"], _R["cheeks"])[face]
    first, last, top, bottom = _NOSE
    half = top + (bottom - top) * (rows - first) / (last - first)
    out[(rows >= first) & (rows <= last) & (np.abs(cols - _FACE[1]) <= half)] = _R["nose"]
    out[ellipse(*_MOUTH)] = _R["mouth"]
    for name, (cy, centres, ry, rx) in (("eyes", _EYES), ("brows", _BROWS)):
        for cx in centres:
            out[ellipse(cy, cx, ry, rx)] = _R[name]
    out.flags.writeable = False
    return out


def template():
    """The face-region map for registered 48x48 FER2013 crops.

    Returns
    -------
    ndarray uint8 ``(48, 48)``
        Ids into :data:`REGION_NAMES`; every id but ``occluder`` occurs. A fresh copy.

    Example
    -------
    >>> t = template()
    >>> REGION_NAMES[t[17, 14]], REGION_NAMES[t[38, 24]]
    ('eyes', 'mouth')
    """
    return _template().copy()


def for_dataset(dataset):
    """The region ids of every face of a dataset: its own (synthetic faces carry their ground
    truth), else :func:`template` for each face (registered FER2013 crops).

    Parameters
    ----------
    dataset : fervis.dataset.Dataset

    Returns
    -------
    ndarray uint8 ``(n, 48, 48)``, read-only
        Ids into the dataset's ``region_names`` (for synthetic faces, :data:`REGION_NAMES`), or
        into :data:`REGION_NAMES` for the template, which is broadcast (no copy per face).

    Example
    -------
    >>> from fervis import data
    >>> faces = data.load("synthetic")  # doctest: +SKIP
    >>> for_dataset(faces).shape == faces.images.shape  # doctest: +SKIP
    True
    """
    require_dataset(dataset, "fervis.regions.for_dataset")
    if dataset.regions is not None:
        return dataset.regions
    return np.broadcast_to(_template(), (len(dataset), IMAGE_SIZE, IMAGE_SIZE))


def names_for(dataset):
    """The names the ids of :func:`for_dataset` index: the dataset's own region names, else
    :data:`REGION_NAMES` (the template's).

    Example
    -------
    >>> names_for(data.load("synthetic"))[:3]  # doctest: +SKIP
    ('background', 'hair', 'forehead')
    """
    require_dataset(dataset, "fervis.regions.names_for")
    return tuple(REGION_NAMES if dataset.regions is None else dataset.region_names)


#: Below this correlation of its row profile with the mean face's, a face counts as not registered.
MIN_FIT = 0.5


@dataclasses.dataclass(frozen=True)
class Registration:
    """How well faces fit the one template: :func:`registration`'s answer.

    Attributes
    ----------
    dy : int ndarray ``(n,)``
        Per face, the shift in pixels (down) that best aligns its row profile with the mean
        face's; 0 is registered.
    dx : int ndarray ``(n,)``
        Per face, how far right of the mean face's its left-right mirror axis lies.
    fit : float ndarray ``(n,)``
        The correlation of the aligned row profiles, in [-1, 1]: below :data:`MIN_FIT` the face's
        rows do not look like the mean face's at all (a profile, a hand, a blank image), and it
        counts as not registered.
    eye_row, mouth_row : float
        The darkest rows of the mean face near the template's eye and mouth lines.
    template_eye_row, template_mouth_row : float
        Where the template puts them.
    tolerance : int
        The shift, in pixels, up to which a face counts as registered.
    """

    dy: np.ndarray
    dx: np.ndarray
    fit: np.ndarray
    eye_row: float
    mouth_row: float
    template_eye_row: float
    template_mouth_row: float
    tolerance: int

    @property
    def n(self):
        return len(self.dy)

    def within(self, which="rows"):
        """``(share, low, high)``: the share of faces whose ``which`` ("rows": eye and mouth rows,
        "columns": left-right centre) is within ``tolerance`` pixels of the mean face's, with its
        Wilson 95 % interval."""
        shifts = {"rows": self.dy, "columns": self.dx}[which]
        if not self.n:
            return float("nan"), float("nan"), float("nan")
        # A face whose rows do not look like the mean face's at all has a shift that means nothing.
        hits = int(np.sum((np.abs(shifts) <= self.tolerance) & (self.fit >= MIN_FIT)))
        return (hits / self.n,) + wilson(hits, self.n)

    def summary(self):
        """One sentence with the figures, for a notebook to print beside the region shares."""
        if not self.n:
            return "registration: no faces to measure."
        parts = []
        for which, what in (("rows", "eye and mouth rows"), ("columns", "left-right centre")):
            share, low, high = self.within(which)
            parts.append(f"{what} within ±{self.tolerance} px on {100 * share:.0f} % (95 % CI {100 * low:.0f}–"
                         f"{100 * high:.0f})")
        unlike = int(np.sum(self.fit < MIN_FIT))
        return (f"registration of {self.n:,} faces against their mean face: " + "; ".join(parts)
                + f" ({unlike:,} faces, {100 * unlike / self.n:.0f} %, whose rows do not look like the mean face's, "
                f"correlation below {MIN_FIT}, count as not registered). The mean face's eye row is {self.eye_row:.1f} (template {self.template_eye_row:.1f}), its "
                f"mouth row {self.mouth_row:.1f} (template {self.template_mouth_row:.1f}).")


def _profiles(x, axis, span):
    """Per face, the mean grey along ``axis`` over ``span`` of the other axis, standardised."""
    lo, hi = span
    prof = x[:, :, lo:hi].mean(axis=2) if axis == 0 else x[:, lo:hi, :].mean(axis=1)
    prof = prof - prof.mean(axis=1, keepdims=True)
    return prof / np.maximum(prof.std(axis=1, keepdims=True), 1e-6)


def _best_shift(profiles, reference, max_shift):
    """Per profile, the shift in [-max_shift, max_shift] with the highest correlation to ``reference``."""
    size = profiles.shape[1]
    core = slice(max_shift, size - max_shift)
    ref = reference[core]
    ref = (ref - ref.mean()) / max(ref.std(), 1e-6)
    scores = []
    for shift in range(-max_shift, max_shift + 1):
        window = profiles[:, max_shift + shift:size - max_shift + shift]
        window = (window - window.mean(axis=1, keepdims=True)) / np.maximum(window.std(axis=1, keepdims=True), 1e-6)
        scores.append((window * ref).mean(axis=1))
    scores = np.stack(scores, axis=1)
    return scores.argmax(axis=1) - max_shift, scores.max(axis=1)


def _mirror_axis(x, band, max_shift):
    """Per face, the shift from the crop's centre of the vertical axis it is most symmetric about."""
    half = IMAGE_SIZE // 2 - max_shift - 6  # the widest strip every shift keeps inside the crop
    strip = x[:, band[0]:band[1]]
    scores = []
    for shift in range(-max_shift, max_shift + 1):
        centre = IMAGE_SIZE // 2 + shift
        left, right = strip[:, :, centre - half:centre], strip[:, :, centre:centre + half][:, :, ::-1]
        left = left - left.mean(axis=(1, 2), keepdims=True)
        right = right - right.mean(axis=(1, 2), keepdims=True)
        norm = np.sqrt((left ** 2).sum(axis=(1, 2)) * (right ** 2).sum(axis=(1, 2)))
        scores.append((left * right).sum(axis=(1, 2)) / np.maximum(norm, 1e-6))
    return np.stack(scores, axis=1).argmax(axis=1) - max_shift


def _darkest_row(profile, around, reach=5):
    rows = np.arange(int(around) - reach, int(around) + reach + 2)
    i = int(np.argmin(profile[rows]))
    if 0 < i < len(rows) - 1:  # sub-pixel: the vertex of the parabola through the minimum and its neighbours
        a, b, c = profile[rows[i - 1]], profile[rows[i]], profile[rows[i + 1]]
        denom = a - 2 * b + c
        return float(rows[i] + (0.5 * (a - c) / denom if denom > 0 else 0.0))
    return float(rows[i])


def registration(images, tolerance=2, max_shift=6):
    """Measure how well faces fit the region template before its shares are trusted.

    The template (:func:`template`) assumes every face sits where FER2013's mean face does. Per
    face, the row profile (mean grey of each row over the central columns: the dark eye and mouth
    rows stand out) is aligned to the mean face's by the shift of highest correlation, and the
    left-right centre is the mirror axis about which the face is most symmetric (a frontal face's
    column profile is too symmetric to align), against the mean face's axis; the mean face's own eye
    and mouth rows are compared with the template's. The shifts are estimates: on faces moved by a
    known 3 px, about 85 % of row shifts and 75 % of column shifts come back within a pixel, so the
    registered share is, if anything, an underestimate.

    Parameters
    ----------
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``, 0-255
    tolerance : int, default 2
        A face is registered when both shifts are at most this many pixels (the template's eye band
        is about 6 px tall, its brows 4.4).
    max_shift : int, default 6

    Returns
    -------
    Registration
        ``.summary()`` is one sentence; ``.within()`` the registered share with its interval.

    Example
    -------
    >>> print(registration(faces.images).summary())  # doctest: +SKIP
    registration: 83 % of 600 faces (95 % CI 80–86) have their eye and mouth rows ...
    """
    func = "fervis.regions.registration"
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"The 'images' parameter of {func} must be faces shaped (n, 48, 48) or (n, 48, 48, 1). "
                         f"Got shape {np.shape(images)} instead.")
    for name, value, low in (("tolerance", tolerance, 0), ("max_shift", max_shift, 1)):
        positive_int(value, name, func, low, IMAGE_SIZE // 4 - 1)
    if not len(x):
        empty = np.zeros(0, np.int64)
        return Registration(empty, empty, np.zeros(0), float("nan"), float("nan"), _EYES[0], _MOUTH[0], tolerance)
    centre = (int(_FACE[1] - _FACE[3] / 2), int(_FACE[1] + _FACE[3] / 2) + 1)  # the face's central columns
    band = (int(_BROWS[0]) - 2, int(_MOUTH[0] + _MOUTH[2]) + 1)  # brows to chin: where the columns differ
    rows = _profiles(x, 0, centre)
    mean_face = x.mean(axis=0)
    dy, fit = _best_shift(rows, rows.mean(axis=0), max_shift)
    dx = _mirror_axis(x, band, max_shift) - _mirror_axis(mean_face[None], band, max_shift)[0]
    mean_rows = mean_face[:, centre[0]:centre[1]].mean(axis=1)
    return Registration(dy.astype(np.int64), dx.astype(np.int64), fit, _darkest_row(mean_rows, _EYES[0]),
                        _darkest_row(mean_rows, _MOUTH[0]), float(_EYES[0]), float(_MOUTH[0]), int(tolerance))


def _own(regions):
    """A Dataset stands for its regions (:func:`for_dataset`); anything else is checked as ids."""
    return for_dataset(regions) if is_dataset(regions) else regions


def _counts(regions, weights, n_regions):
    """Per image, the sum of ``weights`` (n, 48, 48) over each region id: (n, n_regions)."""
    n = len(weights)
    if regions.ndim == 2:
        onehot = (regions.reshape(-1)[None, :] == np.arange(n_regions)[:, None]).astype(np.float64)
        return weights.reshape(n, -1) @ onehot.T
    ids = regions.astype(np.int64) + n_regions * np.arange(n)[:, None, None]
    return np.bincount(ids.ravel(), weights=weights.ravel(), minlength=n * n_regions).reshape(n, n_regions)


def area_shares(regions, n_regions=len(REGION_NAMES)):
    """Share of the image area taken by each region.

    Parameters
    ----------
    regions : int array ``(48, 48)`` or ``(n, 48, 48)``, or Dataset
        Region ids, e.g. :func:`template` or a synthetic dataset's ``regions``; a Dataset stands
        for :func:`for_dataset` of it.
    n_regions : int, default 9
        Number of region ids (columns of the result).

    Returns
    -------
    ndarray float64 ``(n_regions,)`` for one map, ``(n, n_regions)`` for n maps; rows sum to 1.

    Example
    -------
    >>> float(area_shares(template())[REGION_NAMES.index("eyes")].round(3))
    0.056
    """
    regions = region_ids(_own(regions), n_regions, "fervis.regions.area_shares")
    single = regions.ndim == 2
    maps = regions[None] if single else regions
    out = _counts(maps, np.ones(maps.shape, dtype=np.float64), n_regions) / (IMAGE_SIZE * IMAGE_SIZE)
    return out[0] if single else out


def shares(maps, regions, normalize="area", n_regions=len(REGION_NAMES)):
    """Share of each map's mass that falls in each region, raw or relative to the region's area.

    Parameters
    ----------
    maps : array ``(n, 48, 48)`` (or ``(n, 48, 48, 1)``, or one ``(48, 48)`` map)
        Non-negative saliency maps, one per image. Signed maps (plain gradients, LIME weights)
        raise ``ValueError``: take ``np.abs`` or keep the positive part first, since the two
        answer different questions.
    regions : int array ``(48, 48)`` or ``(n, 48, 48)``, or Dataset
        One map for every image (:func:`template`) or one per image (synthetic faces); a Dataset
        stands for :func:`for_dataset` of it.
    normalize : {"area", None}, default "area"
        ``"area"``: concentration, the mass share divided by the region's area share (1 for a
        uniform map; NaN where a region is absent from the image). ``None``: the mass share;
        each row sums to 1.
    n_regions : int, default 9

    Returns
    -------
    ndarray float64 ``(n, n_regions)``
        Columns in :data:`REGION_NAMES` order. A map whose mass is zero gives a row of NaN.

    Example
    -------
    >>> flat = np.ones((2, 48, 48))
    >>> np.allclose(shares(flat, template())[:, REGION_NAMES.index("mouth")], 1.0)
    True
    """
    if normalize not in ("area", None, "none"):
        raise ValueError(
            "The 'normalize' parameter of fervis.regions.shares must be 'area' or None. "
            f"Got {normalize!r} instead."
        )
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3 or maps.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            "The 'maps' parameter of fervis.regions.shares must have shape (n, 48, 48), (n, 48, 48, 1) "
            f"or (48, 48). Got shape {np.shape(maps)} instead."
        )
    if not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
        raise ValueError(f"The 'maps' parameter of fervis.regions.shares must be real numbers. Got {maps.dtype}.")
    maps = maps.astype(np.float64)
    if not np.all(np.isfinite(maps)):
        raise ValueError("The 'maps' parameter of fervis.regions.shares must be finite. Got NaN or inf values.")
    if maps.size and maps.min() < 0:
        raise ValueError(
            "The 'maps' parameter of fervis.regions.shares must be non-negative (saliency mass). "
            f"Got a minimum of {maps.min():.3g}; pass np.abs(maps) or np.maximum(maps, 0) instead."
        )
    regions = region_ids(_own(regions), n_regions, "fervis.regions.shares", n=len(maps))  # one per map, or one template
    mass = _counts(regions, maps, n_regions)
    total = mass.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, mass / np.where(total > 0, total, 1.0), np.nan)
        if normalize == "area":
            area = area_shares(regions, n_regions)
            area = np.broadcast_to(area, out.shape)
            out = np.where(area > 0, out / np.where(area > 0, area, 1.0), np.nan)
    return out
