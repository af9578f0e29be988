"""The in-memory face dataset every fervis module shares: :class:`Dataset` and its fingerprint.

Its own module, below :mod:`fervis.data` (which reads files into it) and :mod:`fervis.synthetic`
(which draws faces into it), so neither imports the other to build one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from fervis._checks import positive_int
from fervis.constants import CLASS_NAMES, IMAGE_SIZE, SPLITS

__all__ = ["Dataset", "fingerprint_arrays", "normalize_name", "SPLIT_DTYPE", "SPLIT_ALIASES"]

#: The dtype of ``Dataset.splits``: fixed-width strings wide enough for every split name.
SPLIT_DTYPE = np.dtype(f"<U{max(map(len, SPLITS))}")
#: Split names as files spell them (after :func:`normalize_name`) -> the split.
SPLIT_ALIASES = {"training": "Training", "train": "Training", "publictest": "PublicTest",
                 "privatetest": "PrivateTest"}


def fingerprint_arrays(*arrays):
    """Hex digest of the dtype, shape and bytes of each array (``None`` allowed).

    Parameters
    ----------
    *arrays : numpy.ndarray or None
        Numeric or fixed-width string arrays; their order matters.

    Returns
    -------
    str
        32 hex characters (BLAKE2b, 16-byte digest).

    Example
    -------
    >>> fingerprint_arrays(np.zeros((2, 48, 48), np.uint8)) == fingerprint_arrays(np.zeros((2, 48, 48), np.uint8))
    True
    """
    h = hashlib.blake2b(digest_size=16)
    for array in arrays:
        if array is None:
            h.update(b"None;")
            continue
        array = np.ascontiguousarray(array)
        if array.dtype.kind == "U" and array.size:
            # The same strings hash the same whatever the array's declared width (<U10, <U11).
            array = array.astype(f"<U{max(1, int(np.char.str_len(array).max()))}")
        if array.dtype.hasobject:
            raise ValueError(
                "The 'arrays' parameter of fervis.data.fingerprint_arrays must hold numeric or "
                f"fixed-width string arrays. Got an array of dtype {array.dtype} instead."
            )
        h.update(f"{array.dtype.str}{array.shape};".encode())
        h.update(array)
    return h.hexdigest()


def _frozen(value, dtype):
    """A read-only array of ``dtype``; copies unless ``value`` is already read-only."""
    array = np.asarray(value)
    if array.dtype != dtype:
        array = array.astype(dtype)
    elif array.flags.writeable or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).copy()
    array.flags.writeable = False
    return array


def normalize_name(name):
    """``name`` lower-cased without blanks, ``_`` or ``-``: how split, class and folder names are matched."""
    return re.sub(r"[\s_\-]", "", str(name)).lower()


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """FER2013-like faces with labels and splits; every array is read-only.

    Parameters
    ----------
    images : numpy.ndarray, uint8, shape (n, 48, 48)
    labels : numpy.ndarray, int, shape (n,)
        Class indices 0-6, or -1 for unlabelled images; stored as int64.
    splits : array of str, shape (n,)
        Each one of ``"Training"``, ``"PublicTest"``, ``"PrivateTest"``.
    class_names : tuple of str, default ``fervis.constants.CLASS_NAMES``
    source : str, default ""
        Where the data came from: a path or ``"synthetic"``.
    fingerprint : str, default ""
        Hex digest of the content; computed with :func:`fingerprint_arrays` when empty.
    regions : numpy.ndarray, uint8, shape (n, 48, 48), or None
        Ground-truth face-region masks (synthetic data only).
    region_names : tuple of str or None

    Example
    -------
    >>> ds = load("synthetic")
    >>> train, val = ds.subset("Training").train_val_split(0.1)
    >>> train.x().shape[1:]
    (48, 48, 1)
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    class_names: tuple = CLASS_NAMES
    source: str = ""
    fingerprint: str = ""
    regions: np.ndarray | None = None
    region_names: tuple | None = None

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                "The 'images' parameter of Dataset must be a uint8 array of shape (n, 48, 48). "
                f"Got dtype {images.dtype} and shape {images.shape} instead."
            )
        n = len(images)
        class_names = tuple(str(c) for c in self.class_names)
        labels = np.asarray(self.labels)
        if labels.shape != (n,) or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(
                f"The 'labels' parameter of Dataset must be an integer array of shape ({n},). "
                f"Got dtype {labels.dtype} and shape {labels.shape} instead."
            )
        if labels.size and (labels.min() < -1 or labels.max() >= len(class_names)):
            raise ValueError(
                f"The 'labels' parameter of Dataset must hold class indices 0-{len(class_names) - 1} "
                f"or -1 (unlabelled). Got values from {labels.min()} to {labels.max()} instead."
            )
        splits = np.asarray(self.splits)
        if splits.dtype.kind in "OS" and splits.size:
            splits = splits.astype(str)
        if splits.shape != (n,) or not (splits.size == 0 or splits.dtype.kind == "U"):
            raise ValueError(
                f"The 'splits' parameter of Dataset must be an array of {n} split names. "
                f"Got dtype {splits.dtype} and shape {splits.shape} instead."
            )
        unknown = sorted(set(np.unique(splits).tolist()) - set(SPLITS))
        if unknown:
            raise ValueError(
                f"The 'splits' parameter of Dataset must hold only {list(SPLITS)}. "
                f"Got {unknown} instead."
            )
        regions = self.regions
        if regions is not None:
            regions = np.asarray(regions)
            if regions.shape != images.shape or not np.issubdtype(regions.dtype, np.integer) or (
                    regions.size and (regions.min() < 0 or regions.max() > 255)):
                raise ValueError(
                    f"The 'regions' parameter of Dataset must be None or an integer array of region ids "
                    f"0-255 shaped like images, {images.shape}. Got dtype {regions.dtype} and shape "
                    f"{regions.shape} instead."
                )
            regions = _frozen(regions, np.uint8)
        set_ = object.__setattr__
        set_(self, "images", _frozen(images, np.uint8))
        set_(self, "labels", _frozen(labels, np.int64))
        set_(self, "splits", _frozen(splits, SPLIT_DTYPE))
        set_(self, "class_names", class_names)
        set_(self, "source", str(self.source))
        set_(self, "regions", regions)
        set_(self, "region_names", None if self.region_names is None else tuple(self.region_names))
        if not self.fingerprint:
            set_(self, "fingerprint", fingerprint_arrays(self.images, self.labels, self.splits, regions))

    # --- reading -------------------------------------------------------------------
    def __len__(self):
        return len(self.images)

    def __repr__(self):
        splits = {s: int(np.count_nonzero(self.splits == s)) for s in SPLITS if (self.splits == s).any()}
        return (f"Dataset(source={self.source!r}, n={len(self)}, splits={splits}, "
                f"labeled={self.labeled}, fingerprint={self.fingerprint[:12]!r})")

    def __eq__(self, other):
        if not isinstance(other, Dataset):
            return NotImplemented
        return (self.fingerprint == other.fingerprint and self.class_names == other.class_names
                and np.array_equal(self.images, other.images) and np.array_equal(self.labels, other.labels)
                and np.array_equal(self.splits, other.splits)
                and (self.regions is None) == (other.regions is None)
                and (self.regions is None or np.array_equal(self.regions, other.regions)))

    def __hash__(self):
        return hash(self.fingerprint)

    @property
    def labeled(self):
        """True when every image has a class label (none is -1)."""
        return bool((self.labels >= 0).all())

    def x(self):
        """Images as model input: a new float32 array of raw 0-255 pixels, shape (n, 48, 48, 1).

        Example
        -------
        >>> load("synthetic").x().dtype
        dtype('float32')
        """
        return self.images.astype(np.float32)[..., None]

    def counts(self):
        """Number of images per split (rows, in ``SPLITS`` order) and class (columns).

        Returns
        -------
        pandas.DataFrame
            int64 counts; an ``unlabeled`` column is added when some labels are -1.

        Example
        -------
        >>> list(load("synthetic").counts().columns)
        ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']
        """
        import pandas as pd

        present = [s for s in SPLITS if (self.splits == s).any()]
        num = len(self.class_names)
        columns = list(self.class_names) + (["unlabeled"] if (self.labels < 0).any() else [])
        table = np.zeros((len(present), len(columns)), np.int64)
        for row, split in enumerate(present):
            labels = self.labels[self.splits == split]
            table[row, :num] = np.bincount(labels[labels >= 0], minlength=num)
            if len(columns) > num:
                table[row, num] = np.count_nonzero(labels < 0)
        return pd.DataFrame(table, index=pd.Index(present, name="split"),
                            columns=pd.Index(columns, name="class"))

    # --- new datasets ----------------------------------------------------------------
    def take(self, indices):
        """A new dataset of the images at ``indices`` (ints, or a boolean mask of length n).

        Example
        -------
        >>> len(load("synthetic").take([0, 2, 4]))
        3
        """
        n = len(self)
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ValueError(
                    f"The 'indices' parameter of Dataset.take must be integers or a boolean mask of "
                    f"shape ({n},). Got a boolean array of shape {idx.shape} instead."
                )
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.intp).reshape(0)
        elif not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise ValueError(
                "The 'indices' parameter of Dataset.take must be a 1-D array of integers or a boolean "
                f"mask. Got dtype {idx.dtype} and shape {idx.shape} instead."
            )
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ValueError(
                f"The 'indices' parameter of Dataset.take must lie in [{-n}, {n}). "
                f"Got values from {idx.min()} to {idx.max()} instead."
            )
        return self._select(idx)

    def _select(self, idx):
        def pick(array):
            out = array[idx]
            out.flags.writeable = False
            return out

        return Dataset(images=pick(self.images), labels=pick(self.labels), splits=pick(self.splits),
                       class_names=self.class_names, source=self.source,
                       regions=None if self.regions is None else pick(self.regions),
                       region_names=self.region_names)

    def subset(self, split):
        """The images of one split (``"Training"``, ``"PublicTest"``, ``"PrivateTest"``).

        Example
        -------
        >>> set(load("synthetic").subset("PublicTest").splits.tolist())
        {'PublicTest'}
        """
        present = [s for s in SPLITS if (self.splits == s).any()]
        name = SPLIT_ALIASES.get(normalize_name(split), split) if isinstance(split, str) else split
        if name not in present:
            raise ValueError(
                f"The 'split' parameter of Dataset.subset must be one of the splits present, {present}. "
                f"Got {split!r} instead."
            )
        return self._select(np.flatnonzero(self.splits == name))

    def sample(self, n, stratify=True, seed=0):
        """``n`` images drawn without replacement, in their original order.

        Parameters
        ----------
        n : int
            0 <= n <= len(self).
        stratify : bool, default True
            Keep each class's share (largest-remainder rounding); unlabelled images form a group.
        seed : int, default 0

        Example
        -------
        >>> len(load("synthetic").sample(50))
        50
        """
        n = positive_int(n, "n", "Dataset.sample", 0, len(self))
        rng = np.random.default_rng(seed)
        if stratify:
            idx = _stratified_choice(self.labels, int(n), rng)
        else:
            idx = rng.choice(len(self), int(n), replace=False)
        return self._select(np.sort(idx))

    def train_val_split(self, val_fraction=0.1, seed=0):
        """Split into disjoint training and validation datasets, stratified by class.

        Parameters
        ----------
        val_fraction : float, default 0.1
            Share of images that go to validation, in (0, 1).
        seed : int, default 0

        Returns
        -------
        (Dataset, Dataset)
            ``train``, ``val``; both keep their images' original order and split names.

        Example
        -------
        >>> train, val = load("synthetic").subset("Training").train_val_split(0.2)
        """
        n = len(self)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (float, int)) or not 0 < val_fraction < 1:
            raise ValueError(
                "The 'val_fraction' parameter of Dataset.train_val_split must be a float in (0, 1). "
                f"Got {val_fraction!r} instead."
            )
        n_val = int(round(n * val_fraction))
        if not 0 < n_val < n:
            raise ValueError(
                f"The 'val_fraction' parameter of Dataset.train_val_split leaves {n_val} of {n} images for "
                f"validation; both parts must be non-empty. Got {val_fraction!r} instead."
            )
        val_idx = np.sort(_stratified_choice(self.labels, n_val, np.random.default_rng(seed)))
        is_val = np.zeros(n, bool)
        is_val[val_idx] = True
        return self._select(np.flatnonzero(~is_val)), self._select(val_idx)


def _stratified_choice(groups, k, rng):
    """``k`` indices drawn without replacement, each group's share kept (largest remainder)."""
    values, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if not len(values):
        return np.zeros(0, np.intp)
    exact = sizes * (k / len(groups))
    quota = np.floor(exact).astype(np.int64)
    remainder = exact - quota
    for g in np.argsort(-remainder, kind="stable")[: k - quota.sum()]:
        quota[g] += 1
    chosen = [rng.choice(np.flatnonzero(inverse == g), quota[g], replace=False)
              for g in range(len(values)) if quota[g]]
    return np.concatenate(chosen) if chosen else np.zeros(0, np.intp)
