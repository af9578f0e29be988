"""Read FER2013 in every layout its users have, plus fervis's synthetic faces.

One call, :func:`load`, reads a source by its content, not its file name:

* Kaggle's ``fer2013.csv`` (columns ``emotion,pixels,Usage``), the Kaggle challenge's
  ``train.csv`` (``emotion,pixels``) and ``test.csv`` (``pixels``), and the course's
  ``train.csv`` (``label,feature``) and unlabelled ``test.csv`` (``id,feature``);
* the per-image release, a folder ``<split>/<emotion>/*.jpg|png`` (``train/angry/x.jpg``,
  ``Training/3/x.png``), the split also taken from ``Training_``/``PublicTest_``/
  ``PrivateTest_`` file-name prefixes;
* each of those gzipped (``.csv.gz``) or zipped (a ``.zip`` holding one CSV, or the tree);
* the string ``"synthetic"``, for :func:`fervis.synthetic.make_dataset`.

Split names as users write them are mapped to FER2013's: ``train`` is ``Training``;
``val``/``validation`` is ``PublicTest``; ``test`` is ``PrivateTest`` beside a validation
folder, else ``PublicTest`` (a ``PublicTest_``/``PrivateTest_`` file-name prefix wins over
the folder). Rows of an unlabelled ``test.csv`` get label -1 and split ``PublicTest``. A
folder or zip with images in emotion folders is read as a tree (CSVs beside it are
ignored); otherwise it must hold exactly one CSV.

Every layout gives one :class:`Dataset`. Parsed files are cached as ``.npz`` under
``$FERVIS_HOME/data`` (default: the user cache directory), keyed by a SHA-256 of the bytes
read (not size and mtime, which ``cp -p`` keeps), so a second load of the 35,887-row CSV
hashes 85 MB and reads one file instead of parsing 270 MB of text. The synthetic faces are
cached the same way, keyed by the code that draws them (0.1 s instead of 6-9 s per notebook).

Reading is bounded whatever the input: compressed layers are streamed, one source may give
at most ``_MAX_TEXT_BYTES`` of text and an image file ``_MAX_IMAGE_BYTES``, and only regular
files are read (a FIFO or device is refused, never opened for reading).

The pixel column is parsed for all rows at once: the bytes of many rows are classified
with numpy (digit or separator), token ends located with one comparison, and each value
rebuilt from its last three digits. Any row that breaks the fast path's assumptions is
re-read token by token, so the first bad row is reported by number.

This module imports only numpy and the standard library; pandas, Pillow and platformdirs
are imported where they are needed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import queue
import re
import stat
import threading
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fervis.constants import CLASS_NAMES, IMAGE_SIZE, SPLITS
from fervis.dataset import SPLIT_ALIASES, SPLIT_DTYPE, Dataset, fingerprint_arrays, normalize_name
from fervis.files import fervis_home, write_atomic

__all__ = ["Dataset", "load", "describe", "fingerprint_arrays"]

_PIXELS = IMAGE_SIZE * IMAGE_SIZE
# Bump when the parser's output for some file could change, so old caches are ignored.
_CACHE_VERSION = 1
# About this many bytes of pixel text are classified per numpy pass: small enough that the
# intermediate arrays stay in the CPU cache, large enough that Python overhead is negligible.
_BLOCK_BYTES = 1 << 20
# Pieces read from a file, and compressed bytes inflated at a time, while streaming a CSV.
_READ_BYTES = 16 << 20
_GZIP_IN_BYTES = 4 << 20
# An image file or member larger than this is not a face crop; refuse it instead of reading it.
_MAX_IMAGE_BYTES = 64 << 20
# The CSV text of one source may be at most this large once decompressed (FER2013's is 290 MB),
# so a small compressed file cannot make fervis read for hours; its arrays take a third of it.
_MAX_TEXT_BYTES = 4 << 30
# A FER2013 row is under 10 kB; a "line" longer than this means the file is something else.
_MAX_LINE_BYTES = 1 << 20

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
_CSV_SUFFIXES = (".csv", ".csv.gz")
_BLANK_BYTES = frozenset(b" \t\r\n")
_BLANK_LINES = re.compile(rb"[ \t\r\n]*\n")  # one character class: no backtracking stack
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_IMAGE_MAGICS = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")


@dataclass(frozen=True)
class _Layout:
    name: str
    columns: tuple  # lower-case column names, in the order the layout's files use
    label: str | None
    pixels: str
    usage: str | None
    split: str  # the split of every row when the file has no usage column


_LAYOUTS = (
    _Layout("Kaggle fer2013.csv", ("emotion", "pixels", "usage"), "emotion", "pixels", "usage", "Training"),
    _Layout("Kaggle challenge train.csv", ("emotion", "pixels"), "emotion", "pixels", None, "Training"),
    _Layout("Kaggle challenge test.csv", ("pixels",), None, "pixels", None, "PublicTest"),
    _Layout("course train.csv", ("label", "feature"), "label", "feature", None, "Training"),
    _Layout("course test.csv", ("id", "feature"), None, "feature", None, "PublicTest"),
)
_LAYOUTS_TEXT = "; ".join(f"{','.join(lay.columns)} ({lay.name})" for lay in _LAYOUTS).replace("usage", "Usage")

_SPLIT_DTYPE = SPLIT_DTYPE
_SPLIT_ALIASES = SPLIT_ALIASES
_canon = normalize_name
_VAL_NAMES = {"val", "valid", "validation", "dev"}
_TEST_NAMES = {"test", "testing"}
_SPLIT_PREFIX = re.compile(r"^(training|publictest|privatetest)[_\-.]", re.IGNORECASE)

_EMOTIONS = {name: i for i, name in enumerate(CLASS_NAMES)}
_EMOTIONS.update({str(i): i for i in range(len(CLASS_NAMES))})
_EMOTIONS.update({"anger": 0, "disgusted": 1, "fearful": 2, "scared": 2, "happiness": 3,
                  "sadness": 4, "surprised": 5})


# --- load ------------------------------------------------------------------------------


def load(source, strict=False, cache=True):
    """Read FER2013 (any layout, see the module docstring) or the synthetic faces.

    Parameters
    ----------
    source : str or os.PathLike
        ``"synthetic"``, a CSV file (plain, ``.gz`` or in a ``.zip``), a folder or ``.zip``
        of per-image files, named ``<split>/<emotion>/<file>``.
    strict : bool, default False
        Images that are not 48x48 are an error; by default they are resized, with one warning.
    cache : bool, default True
        Reuse (and write) the parsed arrays in ``$FERVIS_HOME/data``.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        The path does not exist, or the data is malformed; the message names the file and
        the row (CSV) or image (folder, zip) and what was expected.

    Example
    -------
    >>> ds = load("synthetic")
    >>> ds.counts().shape
    (2, 7)
    """
    if not isinstance(strict, bool) or not isinstance(cache, bool):
        raise TypeError(
            "The 'strict' and 'cache' parameters of fervis.data.load must be bools. "
            f"Got strict={strict!r}, cache={cache!r} instead."
        )
    if isinstance(source, str) and source == "synthetic":
        return _synthetic(cache)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "The 'source' parameter of fervis.data.load must be 'synthetic' or a path (str or "
            f"os.PathLike). Got {source!r} of type {type(source).__name__} instead."
        )
    if os.fspath(source) in ("", b""):
        raise ValueError(
            "The 'source' parameter of fervis.data.load must be 'synthetic' or an existing file or "
            "folder. Got '' instead (an empty path; write '.' for the current folder)."
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(
            "The 'source' parameter of fervis.data.load must be 'synthetic' or an existing file or "
            f"folder. Got {os.fspath(source)!r} instead, which does not exist."
        )
    if not path.is_dir() and not path.is_file():
        raise ValueError(f"{path}: is neither a regular file nor a folder (a device, FIFO or socket?).")
    if path.is_file():
        _check_size(path)  # before its bytes are hashed for the cache key
    key = _cache_key(path) if cache else None
    cached = _read_cache(key) if key else None
    if cached is not None and not (strict and cached["resized"]):
        images, labels, splits = cached["images"], cached["labels"], cached["splits"]
        fingerprint, resized, first = cached["fingerprint"], cached["resized"], cached["first"]
    else:
        images, labels, splits, resized, first = _read(path, strict)
        for array in (images, labels, splits):
            array.flags.writeable = False
        fingerprint = fingerprint_arrays(images, labels, splits, None)
        if key:
            _write_cache(key, images, labels, splits, fingerprint, resized, first)
    if resized:
        warnings.warn(
            f"{resized} of {len(images)} images in {os.fspath(path)} were not 48x48 and were resized "
            f"to 48x48 (the first: {first}); pass strict=True to reject them instead.",
            UserWarning, stacklevel=2,
        )
    return Dataset(images=images, labels=labels, splits=splits, source=os.fspath(path),
                   fingerprint=fingerprint)


def _read(path, strict):
    """Dispatch on content: folder, gzip, zip or CSV text. Returns arrays + resize count."""
    if path.is_dir():
        return _read_folder(path, strict)
    if not path.is_file():
        raise ValueError(f"{path}: is neither a regular file nor a folder (a device, FIFO or socket?).")
    _check_size(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ValueError(f"{path}: the file is empty; expected a FER2013 CSV, a .zip or a .gz file.")
    if head.startswith(_ZIP_MAGICS):
        return _read_zip(path, strict)
    if head.startswith(_GZIP_MAGIC):
        return _csv_result(_parse_csv(_gunzip_chunks(_file_chunks(path, _GZIP_IN_BYTES), str(path)), str(path)))
    if head.startswith(_IMAGE_MAGICS):
        raise ValueError(
            f"{path}: is a single image; pass the folder of the per-image release "
            "(<split>/<emotion>/<image>) or a FER2013 CSV instead."
        )
    return _csv_result(_parse_csv(_file_chunks(path), str(path)))


def _check_size(path):
    size = path.stat().st_size
    if size > _MAX_TEXT_BYTES:
        raise ValueError(
            f"{path}: is {size / 2**30:.1f} GiB, more than the {_MAX_TEXT_BYTES / 2**30:g} GiB "
            "fervis reads from one file; FER2013's CSV is 0.3 GiB."
        )


def _csv_result(arrays):
    images, labels, splits = arrays
    return images, labels, splits, 0, None


def _file_chunks(path, size=_READ_BYTES):
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def _gunzip_chunks(compressed, where):
    """Decompress the gzip stream given as pieces ``compressed``, in a worker thread, yielding
    pieces as they come.

    zlib releases the GIL while it inflates, so decompressing the next piece overlaps with
    parsing this one; neither the compressed nor the inflated stream is ever held whole.
    Several concatenated gzip members are read one after the other.
    """
    pieces = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                pieces.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def inflate():
        source = iter(compressed)
        inflater, todo, ended = zlib.decompressobj(31), b"", False
        while True:
            if inflater.eof:  # one member ends; what follows it starts the next one
                todo = inflater.unused_data
                while not ended and not todo.strip(b"\0"):
                    todo = next(source, None)
                    ended = todo is None
                    todo = todo or b""
                if ended and not todo.strip(b"\0"):
                    return
                inflater = zlib.decompressobj(31)
            if not todo:
                todo = next(source, None)
                if todo is None:
                    raise EOFError("the compressed data ends before its end-of-stream marker")
            # Bounded output per call, so a gzip bomb arrives in pieces the parser can refuse.
            out = inflater.decompress(todo, _READ_BYTES)
            if out:
                yield out
            todo = inflater.unconsumed_tail

    def work():
        try:
            for out in inflate():
                if not put(out):
                    return
            put(None)
        except Exception as exc:  # reported to the reading thread, which names the file
            put(exc)
        finally:
            if hasattr(compressed, "close"):
                compressed.close()

    worker = threading.Thread(target=work, name="fervis-gunzip", daemon=True)
    worker.start()
    try:
        while True:
            item = pieces.get()
            if item is None:
                return
            if isinstance(item, ValueError):  # from reading the compressed pieces: names its file
                raise item
            if isinstance(item, Exception):
                raise ValueError(f"{where}: is not a readable gzip file ({type(item).__name__}: {item}).")
            yield item
    finally:
        stop.set()
        worker.join()


# --- CSV ---------------------------------------------------------------------------------


@dataclass
class _Header:
    layout: _Layout
    found: list  # column names as written in the file
    columns: dict  # role -> column index


def _parse_header(buf, start, end, where):
    header = buf[start:end].rstrip(b"\r").decode("utf-8", errors="replace")
    found = [c.strip().strip('"').strip() for c in header.split(",")]
    lower = [c.lower() for c in found]
    layout = next((lay for lay in _LAYOUTS if sorted(lower) == sorted(lay.columns)), None)
    if layout is None:
        shown = [c if len(c) <= 30 else c[:27] + "..." for c in found[:10]]
        raise ValueError(
            f"{where}: unknown columns {shown}{' ...' if len(found) > 10 else ''} in the first line; "
            f"expected one of the FER2013 layouts: {_LAYOUTS_TEXT}."
        )
    columns = {role: lower.index(name) for role, name in
               (("label", layout.label), ("pixels", layout.pixels), ("usage", layout.usage)) if name}
    return _Header(layout, found, columns)


def _parse_csv(chunks, where):
    """Parse a CSV in one of ``_LAYOUTS``, given as byte pieces, into (images, labels, splits).

    Pieces are cut after their last newline and parsed as they arrive, so a gzip file is
    parsed while the rest of it is decompressed, and at most a piece of text is in memory.
    """
    header, pending, line_no, n_rows, parts, total = None, b"", 1, 0, [], 0

    def parse(buf, pos, stop):
        nonlocal line_no, n_rows
        if stop > pos:
            *arrays, line_no = _parse_rows(buf, pos, stop, header, where, line_no, n_rows)
            parts.append(arrays)
            n_rows += len(arrays[0])

    stream = iter(chunks)
    try:
        for chunk in itertools.chain(stream, [None]):
            final = chunk is None
            buf, pos = (b"" if final else chunk), 0
            total += len(buf)
            if total > _MAX_TEXT_BYTES:
                raise ValueError(
                    f"{where}: holds more than {_MAX_TEXT_BYTES / 2**30:g} GiB of text (after "
                    "decompression), the most fervis reads from one file; FER2013's CSV is 0.3 GiB."
                )
            if header is None:
                buf, pending = pending + buf, b""
                start = 3 if buf.startswith(b"\xef\xbb\xbf") else 0
                if not buf[start:].strip():
                    if final:
                        raise ValueError(
                            f"{where}: the file is empty; expected a header line and rows of 2304 pixels."
                        )
                    # Only blank lines so far: keep the byte-order mark, not the blanks.
                    pending = buf[:start]
                    continue
                end = buf.find(b"\n", start)
                if end < 0 and not final:
                    _check_line_length(buf, where, 1)
                    pending = buf
                    continue
                end = len(buf) if end < 0 else end
                header = _parse_header(buf, start, end, where)
                pos = end + 1
            elif pending:
                # The line cut at the end of the last piece: parse it alone rather than copy
                # the whole new piece behind it.
                end = 0 if final else buf.find(b"\n") + 1
                if not final and not end:
                    pending += buf
                    _check_line_length(pending, where, line_no + 1)
                    continue
                line = pending + buf[:end]
                parse(line, 0, len(line))
                pending, pos = b"", end
            cut = len(buf) if final else buf.rfind(b"\n", pos) + 1
            parse(buf, pos, cut)
            pending = buf[max(cut, pos):]
            _check_line_length(pending, where, line_no + 1)
    finally:
        if hasattr(stream, "close"):
            stream.close()  # stops a decompressing thread when parsing fails
    if not n_rows:
        raise ValueError(f"{where}: has a header ({','.join(header.found)}) but no data rows.")
    return tuple(np.concatenate(arrays) if len(arrays) > 1 else arrays[0] for arrays in zip(*parts))


def _check_line_length(pending, where, line_no):
    if len(pending) > _MAX_LINE_BYTES:
        raise ValueError(
            f"{where}, line {line_no}: is longer than {_MAX_LINE_BYTES >> 20} MB without a line break; "
            "a FER2013 row is under 10 kB, so this is not a FER2013 CSV."
        )


def _parse_rows(buf, pos, stop, header, where, line_no, first_row):
    """Parse the whole lines in ``buf[pos:stop]``; returns images, labels, splits, last line."""
    ncols = len(header.found)
    starts, ends, lines, extra, line_no = _split_rows(buf, pos, stop, ncols, where, header.found,
                                                      line_no, first_row)
    n = len(lines)
    if not n:
        return (np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros(0, np.int64),
                np.zeros(0, _SPLIT_DTYPE), line_no)
    if extra:
        buf = buf + b"".join(extra)
    data = np.frombuffer(buf, np.uint8)
    starts = np.asarray(starts, np.int64).reshape(n, ncols)
    ends = np.asarray(ends, np.int64).reshape(n, ncols)
    rows = _Rows(where, np.asarray(lines, np.int64), first_row)
    col = header.columns["pixels"]
    images = _parse_pixels(data, starts[:, col], ends[:, col], rows)
    if "label" in header.columns:
        col = header.columns["label"]
        labels = _parse_labels(buf, data, starts[:, col], ends[:, col], rows, header.found[col])
    else:
        labels = np.full(n, -1, np.int64)
    if "usage" in header.columns:
        col = header.columns["usage"]
        splits = _parse_usage(buf, starts[:, col], ends[:, col], rows, header.found[col])
    else:
        splits = np.full(n, header.layout.split, dtype=_SPLIT_DTYPE)
    return images.reshape(n, IMAGE_SIZE, IMAGE_SIZE), labels, splits, line_no


@dataclass
class _Rows:
    """Names rows in error messages: file, 1-based data-row number and file line number."""

    where: str
    lines: np.ndarray
    first_row: int

    def __call__(self, r):
        return f"{self.where}, data row {self.first_row + r + 1} (line {self.lines[r]})"


def _split_rows(raw, pos, stop, ncols, where, found, line_no, first_row):
    """Byte ranges of every field of the rows in ``raw[pos:stop]``, and their line numbers.

    Unquoted rows are located with ``bytes.find`` and never copied; a row with quotes is
    read with :mod:`csv` and its fields appended after the buffer (``extra``). Blank lines
    are skipped but counted, so line numbers match the file.
    """
    find = raw.find
    has_quotes = raw.find(b'"', pos, stop) >= 0
    commas = ncols - 1
    starts, ends, lines, extra = [], [], [], []
    extra_at = len(raw)
    while pos < stop:
        if raw[pos] in _BLANK_BYTES:
            # A run of blank lines is skipped in one C-level match, not line by line in Python.
            blanks = _BLANK_LINES.match(raw, pos, stop)
            if blanks:
                line_no += raw.count(b"\n", pos, blanks.end())
                pos = blanks.end()
                continue
        line_end = find(b"\n", pos, stop)
        if line_end < 0:
            line_end = stop
        line_no += 1
        end = line_end - 1 if line_end > pos and raw[line_end - 1] == 13 else line_end
        quoted = has_quotes and find(b'"', pos, end) >= 0
        cuts = [pos - 1]
        if not quoted:
            for _ in range(commas):
                c = find(b",", cuts[-1] + 1, end)
                if c < 0:
                    break
                cuts.append(c)
        if len(cuts) == ncols and find(b",", cuts[-1] + 1, end) < 0:
            if end - pos < 16 and not raw[pos:end].strip():
                pos = line_end + 1
                continue  # a blank line
            cuts.append(end)
            starts.extend([c + 1 for c in cuts[:-1]])
            ends.extend(cuts[1:])
            lines.append(line_no)
        else:
            text = raw[pos:end].decode("utf-8", errors="replace")
            if not text.strip():
                pos = line_end + 1
                continue
            fields = next(csv.reader([text]), []) if quoted else text.split(",")
            if len(fields) != ncols:
                raise ValueError(
                    f"{where}, data row {first_row + len(lines) + 1} (line {line_no}): has "
                    f"{len(fields)} fields, expected {ncols} ({','.join(found)})."
                )
            for field in fields:
                encoded = field.encode("utf-8")
                starts.append(extra_at)
                ends.append(extra_at + len(encoded))
                extra.append(encoded + b"\n")
                extra_at += len(encoded) + 1
            lines.append(line_no)
        pos = line_end + 1
    return starts, ends, lines, extra, line_no


def _parse_pixels(data, fs, fe, rows):
    """(n, 2304) uint8 from the byte ranges [fs, fe) of ``data``, block by block."""
    n = len(fs)
    out = np.empty((n, _PIXELS), np.uint8)
    mean_len = max(1, int((fe - fs).mean()))
    step = max(1, _BLOCK_BYTES // mean_len)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        if not _tokenize_block(data, fs[r0:r1], fe[r0:r1], out[r0:r1]):
            for r in range(r0, r1):
                values = _pixels_slow(data[fs[r]:fe[r]].tobytes())
                if isinstance(values, str):
                    raise ValueError(f"{rows(r)}: {values}.")
                out[r] = values
    return out


def _tokenize_block(data, fs, fe, out):
    """Fast path for rows of exactly 2304 space-separated integers 0-255.

    The rows' fields are copied into one block with a newline after each; every byte is
    classified at once (digit or not), token ends are where a digit is followed by a
    non-digit, and each value is rebuilt from the three bytes that end there. Returns
    False, leaving ``out`` partly written, when any row breaks these assumptions (another
    separator, a count other than 2304, a value above 255, four digits or more); the caller
    then re-reads the block row by row to report or accept each row.
    """
    k = len(fs)
    s, e = int(fs[0]), int(fe[-1])
    # 3 leading spaces so that an index 3 before a token end always exists.
    block = np.empty(e - s + 4, np.uint8)
    block[:3] = 32
    block[3:-1] = data[s:e]
    block[-1] = 10
    row_start = fs - s + 3
    row_end = fe - s + 3  # the byte after each row's field
    filled = 1
    if k > 1:
        gaps = row_start[1:] - row_end[:-1]
        if np.any(gaps < 1):
            return False
        filled += int(gaps.sum())
        if filled == k:
            block[row_end[:-1]] = 10
        else:  # other fields (label, usage) lie between the pixel fields: blank them out
            block[np.arange(filled - 1) + np.repeat(row_end[:-1] - (np.cumsum(gaps) - gaps), gaps)] = 10
    digits = block - np.uint8(48)
    is_digit = digits < 10
    # Anything but digits, spaces and the newlines written above sends the block to the slow path.
    if np.count_nonzero(is_digit) + np.count_nonzero(block == 32) + filled != len(block):
        return False
    pair = is_digit[1:] & is_digit[:-1]
    if np.any(pair[2:] & pair[:-2]):
        return False  # a token of 4 or more digits
    digits *= is_digit
    # value[j] is the number whose last digit is at j + 2, read from bytes j, j+1, j+2
    value = digits[1:-1] * np.uint16(10)
    value += digits[2:]
    value += (digits[:-2] * pair[1:]) * np.uint16(100)
    ends = np.flatnonzero(is_digit[2:-1] > is_digit[3:])  # token ends, minus 2
    if np.any(np.searchsorted(ends, row_end - 2) != _PIXELS * np.arange(1, k + 1)):
        return False
    values = value.take(ends)
    if values.max(initial=0) > 255:
        return False
    out[...] = values.reshape(k, _PIXELS)
    return True


def _pixels_slow(text):
    """One row's pixels as a (2304,) uint8 array, or a str saying what is wrong."""
    tokens = text.split()
    for i, token in enumerate(tokens):
        if not token.isdigit():
            shown = token.decode("utf-8", errors="replace")
            shown = shown if len(shown) <= 20 else shown[:17] + "..."
            return f"pixel {i + 1} is {shown!r}, which is not a number; expected integers 0-255"
        if int(token) > 255:
            return f"pixel {i + 1} is {int(token)}, outside 0-255"
    if len(tokens) != _PIXELS:
        return f"has {len(tokens)} pixel values, expected {_PIXELS} (48x48)"
    return np.array([int(t) for t in tokens], np.uint8)


def _parse_labels(buf, data, ls, le, rows, column):
    """Class indices from the label column; the first one outside 0-6 is an error."""
    num = len(CLASS_NAMES)
    if np.all(le - ls == 1):
        labels = data[ls].astype(np.int64) - 48
    else:
        labels = np.empty(len(ls), np.int64)
        for r, (s, e) in enumerate(zip(ls.tolist(), le.tolist())):
            token = buf[s:e].strip()
            labels[r] = int(token) if token.isdigit() and len(token) < 6 else -1
    bad = np.flatnonzero((labels < 0) | (labels >= num))
    if bad.size:
        r = int(bad[0])
        token = buf[int(ls[r]):int(le[r])].decode("utf-8", errors="replace").strip()
        raise ValueError(
            f"{rows(r)}: {column} {token[:20]!r} is not a class index; "
            f"expected an integer 0-{num - 1} ({', '.join(CLASS_NAMES)})."
        )
    return labels


def _parse_usage(buf, us, ue, rows, column):
    """Split names from the usage column (Training/PublicTest/PrivateTest or aliases)."""
    values = np.array([buf[s:e].strip() for s, e in zip(us.tolist(), ue.tolist())], dtype=object)
    names, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.ravel()
    texts = [v.decode("utf-8", errors="replace").strip('"') for v in names]
    mapping = _resolve_splits(texts)
    for i, text in enumerate(texts):
        if mapping[text] is None:
            r = int(np.flatnonzero(inverse == i)[0])
            raise ValueError(
                f"{rows(r)}: {column} {text[:20]!r} is not a split; expected one of {', '.join(SPLITS)}."
            )
    table = np.array([mapping[t] for t in texts], dtype=_SPLIT_DTYPE)
    return table[inverse]


def _resolve_splits(names):
    """Map split names as users write them to SPLITS; ``None`` for names that are no split.

    ``train`` is Training; ``val``/``validation`` is PublicTest (the split FER2013 users
    validate on); ``test`` is PrivateTest beside a validation split, else PublicTest.
    """
    canon = {name: _canon(name) for name in names}
    has_val = any(c in _VAL_NAMES for c in canon.values())
    mapping = {}
    for name, c in canon.items():
        if c in _SPLIT_ALIASES:
            mapping[name] = _SPLIT_ALIASES[c]
        elif c in _VAL_NAMES:
            mapping[name] = "PublicTest"
        elif c in _TEST_NAMES:
            mapping[name] = "PrivateTest" if has_val else "PublicTest"
        else:
            mapping[name] = None
    return mapping


# --- per-image trees ------------------------------------------------------------------------


def _hidden(parts):
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_tree(names):
    """Whether some file is an image inside an emotion folder (then CSVs beside it are ignored)."""
    return any(len(p) >= 2 and p[-1].lower().endswith(_IMAGE_SUFFIXES) and _canon(p[-2]) in _EMOTIONS
               for p in names)


def _walk_error(exc):
    raise ValueError(
        f"{exc.filename}: cannot be read ({exc.strerror or exc}); every folder of a FER2013 tree must "
        "be readable, so that no class is left out unseen."
    )


def _read_folder(path, strict):
    entries = []
    for dirpath, dirnames, filenames in os.walk(path, onerror=_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not _hidden((d,)))
        rel = Path(dirpath).relative_to(path).parts
        for name in sorted(filenames):
            if not _hidden((name,)):
                entries.append((rel + (name,), Path(dirpath, name)))
    csvs = [] if _is_tree([p for p, _ in entries]) else [
        e for e in entries if e[0][-1].lower().endswith(_CSV_SUFFIXES)]
    if len(csvs) > 1:
        raise ValueError(
            f"{path}: holds {len(csvs)} CSV files ({', '.join('/'.join(p) for p, _ in csvs)}); "
            "pass the one to read."
        )
    if csvs:
        return _read(csvs[0][1], strict)
    # The folder's own name (and its parent's) can be the emotion or the split.
    prefix = tuple(p for p in (path.resolve().parent.name, path.resolve().name) if p)
    items = [(prefix + parts, str(Path(*parts)), _file_reader(file)) for parts, file in entries]
    return _read_images(items, str(path), strict)


def _read_zip(path, strict):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: is not a readable zip file ({exc}).") from None
    with archive:
        members = []
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename.replace("\\", "/")
            parts = tuple(p for p in name.split("/") if p not in ("", "."))
            if name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise ValueError(
                    f"{path}: member {info.filename!r} has an unsafe path (absolute or with '..'); "
                    "refusing to read this archive."
                )
            if parts and not _hidden(parts):
                members.append((parts, info))
        csvs = [] if _is_tree([p for p, _ in members]) else [
            (p, i) for p, i in members if p[-1].lower().endswith(_CSV_SUFFIXES)]
        if len(csvs) > 1:
            raise ValueError(
                f"{path}: the zip holds {len(csvs)} CSV files ({', '.join(i.filename for _, i in csvs)}); "
                "expected one CSV or a folder tree of images."
            )
        if csvs:
            info = csvs[0][1]
            where = f"{path} (member {info.filename})"
            if _member_head(archive, info, where).startswith(_GZIP_MAGIC):
                chunks = _gunzip_chunks(_member_chunks(archive, info, where, _GZIP_IN_BYTES), where)
            else:
                chunks = _member_chunks(archive, info, where)
            return _csv_result(_parse_csv(chunks, where))

        def reader(info):
            def read():
                if info.file_size > _MAX_IMAGE_BYTES:
                    raise ValueError(_too_large(info.file_size))
                data = b"".join(_member_chunks(archive, info, f"{path} (member {info.filename})"))
                if len(data) > _MAX_IMAGE_BYTES:  # the zip's directory understated it
                    raise ValueError(_too_large(len(data)))
                return data
            return read

        items = [(parts, info.filename, reader(info)) for parts, info in sorted(members, key=lambda m: m[0])]
        return _read_images(items, str(path), strict)


def _member_head(archive, info, where):
    try:
        with archive.open(info) as member:
            return member.read(2)
    except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise ValueError(f"{where}: cannot be read from the zip ({exc}).") from None


def _member_chunks(archive, info, where, size=_READ_BYTES):
    """Stream a zip member in pieces, so a CSV is never held whole (nor a zip bomb inflated)."""
    try:
        with archive.open(info) as member:
            while chunk := member.read(size):
                yield chunk
    except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise ValueError(f"{where}: cannot be read from the zip ({exc}).") from None


def _too_large(size):
    return (f"is {size} bytes, more than the {_MAX_IMAGE_BYTES >> 20} MiB fervis reads for one face "
            "image")


def _file_reader(file):
    """Read one image file of a folder: a regular file (a symlink to one is followed) of at most
    ``_MAX_IMAGE_BYTES``; a device, FIFO or socket is refused without opening it for reading
    (a FIFO would block, ``/dev/zero`` never end)."""
    def read():
        try:
            info = os.stat(file)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("is not a regular file (a device, FIFO or socket?); expected an image file")
            if info.st_size > _MAX_IMAGE_BYTES:
                raise ValueError(_too_large(info.st_size))
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the stat
                    raise ValueError("is not a regular file; expected an image file")
                data = f.read(_MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
        if len(data) > _MAX_IMAGE_BYTES:  # grew since the stat
            raise ValueError(_too_large(len(data)))
        return data
    return read


def _read_images(items, where, strict):
    """Decode ``(parts, shown_name, read_bytes)`` items named ``.../<split>/<emotion>/<file>``."""
    from PIL import Image

    split_dirs = {p[-3] for p, _, _ in items if len(p) >= 3 and _canon(p[-3]) in
                  set(_SPLIT_ALIASES) | _VAL_NAMES | _TEST_NAMES}
    split_of_dir = _resolve_splits(split_dirs)
    images, labels, splits = [], [], []
    resized, first = 0, None
    for parts, shown, read in items:
        is_image_name = parts[-1].lower().endswith(_IMAGE_SUFFIXES)
        label = _EMOTIONS.get(_canon(parts[-2])) if len(parts) >= 2 else None
        if label is None:
            if not is_image_name:
                continue  # a README, a licence or a manifest beside the tree
            folder = parts[-2] if len(parts) >= 2 else ""
            raise ValueError(
                f"{where}: image {shown!r} is in folder {folder!r}, which is not an emotion; expected "
                f"<split>/<emotion>/<image> with emotion one of {', '.join(CLASS_NAMES)} (or 0-6)."
            )
        try:
            data = read()
        except ValueError as exc:
            raise ValueError(f"{where}: image {shown!r} {exc}.") from None
        try:
            im = Image.open(io.BytesIO(data))  # in memory: no file to close
            im.load()
        except Exception as exc:  # Pillow raises many types for a bad file; all mean the same here
            kind = "a corrupt image" if data[:16].startswith(_IMAGE_MAGICS) else "not an image"
            # Pillow's message names the in-memory buffer ("<_io.BytesIO object at 0x...>"): drop it.
            reason = _BUFFER_REPR.sub("it", str(exc))
            raise ValueError(
                f"{where}: file {shown!r} in emotion folder {parts[-2]!r} is {kind} "
                f"({type(exc).__name__}: {reason}); expected a 48x48 grayscale JPEG or PNG."
            ) from None
        gray = _to_gray8(im, where, shown)
        if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
            width, height = gray.size
            if strict:
                raise ValueError(
                    f"{where}: image {shown!r} is {width}x{height}, expected 48x48 "
                    "(strict=True; pass strict=False to resize it)."
                )
            resized += 1
            first = first or f"{shown!r}, {width}x{height}"
            gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        pixels = np.asarray(gray, dtype=np.uint8)
        match = _SPLIT_PREFIX.match(parts[-1])
        if match:
            split = _SPLIT_ALIASES[match.group(1).lower()]
        elif len(parts) >= 3 and parts[-3] in split_of_dir:
            split = split_of_dir[parts[-3]]
        else:
            split = "Training"
        images.append(pixels)
        labels.append(label)
        splits.append(split)
    if not images:
        raise ValueError(
            f"{where}: holds no images and no CSV; expected <split>/<emotion>/<image> files "
            "(e.g. train/angry/0.jpg) or one FER2013 CSV."
        )
    return (np.stack(images), np.array(labels, np.int64), np.array(splits, dtype=_SPLIT_DTYPE), resized, first)


_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _to_gray8(im, where, shown):
    """An 8-bit grey ("L") copy of a loaded Pillow image.

    16-bit greys (PNG's ``I;16``, Pillow's 32-bit ``I``) are scaled from 0-65535 to 0-255, not
    clipped as ``convert("L")`` would; float images are refused (no range to scale from).
    """
    from PIL import Image

    if im.mode == "L":
        return im.copy()
    if im.mode.startswith("I"):
        values = np.asarray(im, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{where}: image {shown!r} has {im.mode} pixels from {values.min():g} to {values.max():g}; "
                "expected 8-bit (0-255) or 16-bit (0-65535) grey levels."
            )
        return Image.fromarray(np.rint(values / 257).astype(np.uint8), "L")
    if im.mode == "F":
        raise ValueError(
            f"{where}: image {shown!r} has floating-point pixels (mode F), whose grey-level range is "
            "unknown; expected an 8-bit or 16-bit image."
        )
    return im.convert("L")


def _synthetic(cache):
    """The embedded default faces: rendering them takes seconds, reading the cache milliseconds.

    Every notebook and ``fervis demo`` start by loading them, each in a fresh process, so they
    are cached like a parsed file, keyed by the code that draws them and numpy's version.
    """
    from fervis import synthetic

    key = _synthetic_key() if cache else None
    cached = _read_cache(key) if key else None
    if cached is not None and cached["regions"] is not None:
        return Dataset(images=cached["images"], labels=cached["labels"], splits=cached["splits"],
                       source="synthetic", fingerprint=cached["fingerprint"], regions=cached["regions"],
                       region_names=synthetic.REGION_NAMES)
    dataset = synthetic.make_dataset()
    if key:
        _write_cache(key, dataset.images, dataset.labels, dataset.splits, dataset.fingerprint, 0, None,
                     regions=dataset.regions)
    return dataset


def _synthetic_key():
    from fervis import constants, regions, synthetic

    h = hashlib.blake2b(digest_size=16)
    h.update(f"v{_CACHE_VERSION}\0synthetic\0numpy {np.__version__}\0".encode())
    for module in (synthetic, regions, constants):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


# --- cache ------------------------------------------------------------------------------------


def _cache_dir():
    return fervis_home() / "data"


def _cache_key(path):
    """Digest of the bytes the source is read from: a file's content, or a folder's file names
    (and its own and its parent's name, which can be the emotion or the split) and contents.

    Keyed by content, not by size and mtime, so an edit that keeps both (``cp -p``,
    ``rsync -t``, unzip) is seen. SHA-256 runs at over 1 GB/s, a small cost beside a parse.
    """
    h = hashlib.sha256(f"v{_CACHE_VERSION}\0".encode())
    if path.is_dir():
        resolved = path.resolve()
        for name in (resolved.parent.name, resolved.name):
            h.update(os.fsencode(name) + b"\0")
        for dirpath, dirnames, filenames in os.walk(path, onerror=_walk_error):
            dirnames.sort()
            for name in sorted(filenames):
                file = os.path.join(dirpath, name)
                h.update(os.fsencode(os.path.relpath(file, path)) + b"\0")
                # A FIFO or device, or a file too large to read, is refused by the reader: unread here.
                if os.path.isfile(file) and os.path.getsize(file) <= _MAX_TEXT_BYTES:
                    _hash_file(h, file)
    else:
        _hash_file(h, path)
    return h.hexdigest()[:32]


def _hash_file(h, file):
    try:
        with open(file, "rb") as f:
            h.update(f"{os.fstat(f.fileno()).st_size}\0".encode())
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise ValueError(f"{file}: cannot be read ({exc.strerror or exc}).") from None


def _read_cache(key):
    """The cached arrays, or ``None`` (a miss) for a missing, unreadable or inconsistent file."""
    file = _cache_dir() / f"{key}.npz"
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            if int(z["version"]) != _CACHE_VERSION:
                return None
            out = {"images": z["images"], "labels": z["labels"], "splits": z["splits"],
                   "fingerprint": str(z["fingerprint"]), "resized": int(z["resized"]),
                   "first": str(z["first"]) or None,
                   "regions": z["regions"] if "regions" in z.files else None}
    except Exception:  # an unreadable cache is only a miss; the source is parsed again
        return None
    images, labels, splits, regions = out["images"], out["labels"], out["splits"], out["regions"]
    n = len(images)
    consistent = (
        images.dtype == np.uint8 and images.shape == (n, IMAGE_SIZE, IMAGE_SIZE)
        and labels.dtype == np.int64 and labels.shape == (n,)
        and (not n or (labels.min() >= -1 and labels.max() < len(CLASS_NAMES)))
        and splits.dtype.kind == "U" and splits.shape == (n,) and set(np.unique(splits).tolist()) <= set(SPLITS)
        and (regions is None or (regions.dtype == np.uint8 and regions.shape == images.shape))
        and re.fullmatch(r"[0-9a-f]{32}", out["fingerprint"]) is not None and out["resized"] >= 0
    )
    if not consistent:  # well formed but not what fervis writes: a miss too, parsed again
        return None
    for name in ("images", "labels", "splits", "regions"):
        if out[name] is not None:
            out[name].flags.writeable = False
    return out


def _write_cache(key, images, labels, splits, fingerprint, resized, first, regions=None):
    """Write atomically (:func:`fervis.files.write_atomic`); a cache that cannot be written is a warning."""
    folder = _cache_dir()

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, splits=splits, fingerprint=np.array(fingerprint),
                     resized=np.array(resized), first=np.array(first or ""),
                     version=np.array(_CACHE_VERSION), **({} if regions is None else {"regions": regions}))

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{key}.npz", write, what="data cache")
    except OSError as exc:
        warnings.warn(f"could not write the data cache in {folder} ({exc}); continuing without it.",
                      UserWarning, stacklevel=3)


# --- describe ----------------------------------------------------------------------------------


def describe(dataset):
    """Counts, pixel statistics and problems of a dataset, for ``fervis data inspect``.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    dict
        ``source``, ``fingerprint``, ``n_images``, ``labeled``; ``counts`` (split -> class ->
        int); ``pixels`` (``mean``, ``std``, ``min``, ``max``); ``constant_images`` (indices
        of images with one grey level, e.g. blank ones); ``duplicate_groups`` (lists of
        indices of identical images); ``problems`` (sentences, empty when none found).

    Example
    -------
    >>> describe(load("synthetic"))["problems"]
    []
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"The 'dataset' parameter of fervis.data.describe must be a Dataset. "
            f"Got {type(dataset).__name__} instead."
        )
    n = len(dataset)
    flat = dataset.images.reshape(n, _PIXELS)
    total, squares = 0, 0
    for r0 in range(0, n, 4096):
        chunk = flat[r0:r0 + 4096].astype(np.uint32)
        total += int(chunk.sum(dtype=np.uint64))
        squares += int((chunk * chunk).sum(dtype=np.uint64))
    count = max(1, flat.size)
    mean = total / count
    std = float(np.sqrt(max(0.0, squares / count - mean * mean)))
    lo, hi = (flat.min(axis=1), flat.max(axis=1)) if n else (np.zeros(0), np.zeros(0))
    constant = np.flatnonzero(lo == hi)

    digests = np.frombuffer(b"".join(hashlib.blake2b(row, digest_size=8).digest() for row in flat), "<u8")
    _, inverse, sizes = np.unique(digests, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(sizes)[:-1]
    groups = [g for g in np.split(order, bounds) if len(g) > 1] if n else []
    groups.sort(key=lambda g: g[0])
    # Digests can collide in principle; keep only groups whose images are really equal.
    groups = [g.tolist() for g in groups if (flat[g] == flat[g[0]]).all()]

    counts = dataset.counts()
    problems = []
    if len(constant):
        problems.append(f"{len(constant)} images have a single grey level (blank), e.g. indices "
                        f"{constant[:5].tolist()}.")
    if groups:
        extra = sum(len(g) - 1 for g in groups)
        problems.append(f"{extra} images duplicate another image ({len(groups)} groups), e.g. indices {groups[0]}.")
        across = [g for g in groups if len(set(dataset.splits[g].tolist())) > 1]
        if across:
            problems.append(f"{len(across)} duplicate groups span several splits (test images seen in "
                            f"training), e.g. indices {across[0]}.")
        clashing = [g for g in groups if len(set(dataset.labels[g].tolist()) - {-1}) > 1]
        if clashing:
            problems.append(f"{len(clashing)} duplicate groups carry different labels, e.g. indices "
                            f"{clashing[0]} labelled {dataset.labels[clashing[0]].tolist()}.")
    if dataset.labeled:
        for split, row in counts.iterrows():
            missing = [c for c in dataset.class_names if row[c] == 0]
            if missing:
                problems.append(f"{split} has no images of {', '.join(missing)}.")
    return {
        "source": dataset.source,
        "fingerprint": dataset.fingerprint,
        "n_images": n,
        "labeled": dataset.labeled,
        "counts": {split: {c: int(v) for c, v in row.items()} for split, row in counts.iterrows()},
        "pixels": {"mean": float(mean), "std": std,
                   "min": int(flat.min()) if n else 0, "max": int(flat.max()) if n else 0},
        "constant_images": constant.tolist(),
        "duplicate_groups": groups,
        "problems": problems,
    }
