"""fervis.data: every FER2013 layout, every bad input, the cache, and the Dataset helpers.

All files are written to tmp_path at test time from random pixels; the real FER2013 file
is only read through the ``fer2013_path`` fixture.
"""

import functools
import gzip
import io
import os
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fervis import data
from fervis.constants import CLASS_NAMES, SPLITS
from fervis.data import Dataset, describe, fingerprint_arrays, load


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fresh, empty FERVIS_HOME per test, so cache assertions see only this test's files."""
    path = tmp_path / "fervis_home"
    monkeypatch.setenv("FERVIS_HOME", str(path))
    return path


def cache_files(home):
    folder = home / "data"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def faces(n, seed=0):
    """``n`` random 48x48 images, labels covering every class, and a split per image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    labels = np.arange(n) % 7
    splits = np.array([SPLITS[i % 3] for i in range(n)])
    return images, labels, splits


def pixel_text(image):
    return " ".join(map(str, image.ravel().tolist()))


def kaggle_csv(images, labels, splits, newline="\n"):
    rows = ["emotion,pixels,Usage"]
    rows += [f"{label},{pixel_text(im)},{split}" for im, label, split in zip(images, labels, splits)]
    return (newline.join(rows) + newline).encode()


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def zip_of(path, members):
    """A zip at ``path`` whose members are {name: bytes}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def png(image):
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


# --- CSV layouts -----------------------------------------------------------------------------

IMAGES, LABELS, SPLITS_OF = faces(12)
UNLABELED = np.full(12, -1)


def _kaggle(tmp):
    return write(tmp / "fer2013.csv", kaggle_csv(IMAGES, LABELS, SPLITS_OF)), LABELS, SPLITS_OF


def _kaggle_gz(tmp):
    return write(tmp / "fer2013.csv.gz", gzip.compress(kaggle_csv(IMAGES, LABELS, SPLITS_OF))), LABELS, SPLITS_OF


def _kaggle_zip(tmp):
    return zip_of(tmp / "fer2013.zip", {"fer2013/fer2013.csv": kaggle_csv(IMAGES, LABELS, SPLITS_OF),
                                        "fer2013/README.txt": b"notes"}), LABELS, SPLITS_OF


def _kaggle_gz_in_zip(tmp):
    content = gzip.compress(kaggle_csv(IMAGES, LABELS, SPLITS_OF))
    return zip_of(tmp / "archive.zip", {"fer2013.csv.gz": content}), LABELS, SPLITS_OF


def _gz_without_suffix(tmp):
    # Read by content: a gzip file called data.bin is still a gzipped CSV.
    return write(tmp / "data.bin", gzip.compress(kaggle_csv(IMAGES, LABELS, SPLITS_OF))), LABELS, SPLITS_OF


def _crlf_bom_blank_quoted(tmp):
    content = kaggle_csv(IMAGES, LABELS, SPLITS_OF, newline="\r\n").replace(b"\r\n", b"\r\n\r\n", 1)
    lines = content.split(b"\r\n")
    lines[3] = b'"%s","%s","%s"' % tuple(lines[3].split(b","))  # one fully quoted row
    return write(tmp / "excel.csv", b"\xef\xbb\xbf" + b"\r\n".join(lines)), LABELS, SPLITS_OF


def _no_final_newline_reordered(tmp):
    rows = ["Usage,pixels,emotion"] + [f"{s},{pixel_text(im)},{lab}" for im, lab, s in zip(IMAGES, LABELS, SPLITS_OF)]
    return write(tmp / "reordered.csv", "\n".join(rows).encode()), LABELS, SPLITS_OF


def _course_train(tmp):
    rows = ["label,feature"] + [f"{lab},{pixel_text(im)}" for im, lab in zip(IMAGES, LABELS)]
    return write(tmp / "train.csv", ("\r\n".join(rows) + "\r\n").encode()), LABELS, ["Training"] * 12


def _course_test(tmp):
    rows = ["id,feature"] + [f"{i},{pixel_text(im)}" for i, im in enumerate(IMAGES)]
    return write(tmp / "test.csv", ("\n".join(rows) + "\n").encode()), UNLABELED, ["PublicTest"] * 12


def _challenge_train(tmp):
    rows = ["emotion,pixels"] + [f"{lab},{pixel_text(im)}" for im, lab in zip(IMAGES, LABELS)]
    return write(tmp / "train.csv", ("\n".join(rows) + "\n").encode()), LABELS, ["Training"] * 12


def _challenge_test(tmp):
    rows = ["pixels"] + [pixel_text(im) for im in IMAGES]
    return write(tmp / "test.csv", ("\n".join(rows) + "\n").encode()), UNLABELED, ["PublicTest"] * 12


def _tabs_double_spaces_leading_zeros(tmp):
    # Not the fast path's shape: every block falls back to the row-by-row reader.
    rows = ["emotion,pixels,Usage"]
    for im, lab, s in zip(IMAGES, LABELS, SPLITS_OF):
        words = [f"{v:03d}" if i % 3 == 0 else str(v) for i, v in enumerate(im.ravel().tolist())]
        rows.append(f"{lab}, {'  '.join(words[:100])}\t{' '.join(words[100:])} , {s}")
    return write(tmp / "messy.csv", ("\n".join(rows) + "\n").encode()), LABELS, SPLITS_OF


@pytest.mark.parametrize("build", [
    _kaggle, _kaggle_gz, _kaggle_zip, _kaggle_gz_in_zip, _gz_without_suffix, _crlf_bom_blank_quoted,
    _no_final_newline_reordered, _course_train, _course_test, _challenge_train, _challenge_test,
    _tabs_double_spaces_leading_zeros,
], ids=lambda f: f.__name__.strip("_"))
def test_csv_layouts(tmp_path, build):
    path, labels, splits = build(tmp_path)
    ds = load(path)
    assert isinstance(ds, Dataset)
    np.testing.assert_array_equal(ds.images, IMAGES)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.splits, splits)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    assert ds.source == str(path)
    assert ds.labeled == bool((np.asarray(labels) >= 0).all())


def test_same_content_gives_same_fingerprint_in_every_container(tmp_path):
    plain, _, _ = _kaggle(tmp_path)
    packed, _, _ = _kaggle_gz(tmp_path)
    zipped, _, _ = _kaggle_zip(tmp_path)
    prints = {load(p, cache=False).fingerprint for p in (plain, packed, zipped)}
    assert len(prints) == 1
    other = write(tmp_path / "other.csv", kaggle_csv(IMAGES[::-1], LABELS, SPLITS_OF))
    assert load(other).fingerprint not in prints


def test_many_rows_streamed_in_small_pieces(tmp_path, monkeypatch):
    # Tiny read pieces and blocks: rows straddle piece boundaries and every block edge is hit.
    images, labels, splits = faces(300, seed=1)
    content = kaggle_csv(images, labels, splits)
    plain = write(tmp_path / "big.csv", content)
    packed = write(tmp_path / "big.csv.gz", gzip.compress(content))
    monkeypatch.setattr(data, "_READ_BYTES", 20_000)
    monkeypatch.setattr(data, "_GZIP_IN_BYTES", 5_000)
    monkeypatch.setattr(data, "_BLOCK_BYTES", 40_000)
    for path in (plain, packed):
        ds = load(path, cache=False)
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)
        np.testing.assert_array_equal(ds.splits, splits)


def test_multi_member_gzip(tmp_path):
    content = kaggle_csv(IMAGES, LABELS, SPLITS_OF)
    cut = content.index(b"\n", len(content) // 2) + 1
    path = write(tmp_path / "two.csv.gz", gzip.compress(content[:cut]) + gzip.compress(content[cut:]))
    np.testing.assert_array_equal(load(path).images, IMAGES)


# --- per-image trees -------------------------------------------------------------------------

TREE_IMAGES, _, _ = faces(6, seed=2)


def _tree(root, names):
    for i, name in enumerate(names):
        write(root / name, png(TREE_IMAGES[i]))
    return root


@pytest.mark.parametrize("names, labels, splits", [
    (["train/angry/a.png", "train/happy/b.png", "test/neutral/c.png", "test/sad/d.png"],
     [6, 4, 0, 3], ["PublicTest", "PublicTest", "Training", "Training"]),
    (["Training/3/a.png", "PublicTest/0/b.png", "PrivateTest/6/c.png"],
     [6, 0, 3], ["PrivateTest", "PublicTest", "Training"]),
    (["train/fear/a.png", "val/fear/b.png", "test/fear/c.png"],
     [2, 2, 2], ["PrivateTest", "Training", "PublicTest"]),
    (["train/Surprise/Training_00001.png", "test/surprise/PublicTest_0002.png",
      "test/surprise/PrivateTest_0003.png"],
     [5, 5, 5], ["PrivateTest", "PublicTest", "Training"]),
    (["disgust/PrivateTest_1.png", "disgust/x.png", "README.md"],
     [1, 1], ["PrivateTest", "Training"]),
], ids=["train-test-names", "kaggle-names-numeric-emotions", "train-val-test", "file-prefixes", "no-split-level"])
def test_image_trees_folder_and_zip(tmp_path, names, labels, splits):
    root = _tree(tmp_path / "faces", names)
    zipped = zip_of(tmp_path / "faces.zip", {f"faces/{n}": (root / n).read_bytes() for n in names})
    for source in (root, zipped):
        ds = load(source)
        # Files are read in path order.
        order = np.argsort([n for n in names if n.endswith(".png")], kind="stable")
        np.testing.assert_array_equal(ds.images, TREE_IMAGES[: len(order)][order])
        np.testing.assert_array_equal(ds.labels, labels)
        np.testing.assert_array_equal(ds.splits, splits)
        assert ds.regions is None


def test_folder_named_after_split_and_gray_conversion(tmp_path):
    rgb = np.repeat(TREE_IMAGES[0][..., None], 3, axis=2)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    write(tmp_path / "test" / "happy" / "a.png", out.getvalue())
    jpeg = io.BytesIO()
    Image.fromarray(TREE_IMAGES[1]).save(jpeg, format="JPEG", quality=95)
    write(tmp_path / "test" / "happy" / "b.jpg", jpeg.getvalue())
    ds = load(tmp_path / "test")
    assert list(ds.splits) == ["PublicTest", "PublicTest"] and list(ds.labels) == [3, 3]
    np.testing.assert_array_equal(ds.images[0], TREE_IMAGES[0])
    assert np.abs(ds.images[1].astype(int) - TREE_IMAGES[1]).mean() < 12  # lossy, but the same face


def test_resized_images_get_one_warning_or_an_error_when_strict(tmp_path):
    big = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    root = _tree(tmp_path / "faces", ["train/sad/a.png"])
    write(root / "train/sad/b.png", png(big))
    write(root / "train/sad/c.png", png(big[:50, :60]))
    with pytest.warns(UserWarning, match=r"2 of 3 images .* were not 48x48 .* 'train/sad/b.png', 64x64") as record:
        ds = load(root)
    assert len([w for w in record if "48x48" in str(w.message)]) == 1
    assert ds.images.shape == (3, 48, 48)
    # The cache keeps the resize count: a reload warns again, and strict=True still refuses.
    with pytest.warns(UserWarning, match="2 of 3 images"):
        load(root)
    with pytest.raises(ValueError, match=r"faces: image 'train/sad/b.png' is 64x64, expected 48x48"):
        load(root, strict=True)


def test_csv_preferred_inside_plain_folder_and_tree_over_manifest(tmp_path):
    write(tmp_path / "kaggle" / "fer2013.csv", kaggle_csv(IMAGES, LABELS, SPLITS_OF))
    np.testing.assert_array_equal(load(tmp_path / "kaggle").images, IMAGES)
    root = _tree(tmp_path / "tree", ["train/angry/a.png"])
    write(root / "labels.csv", b"whatever,columns\n")
    assert len(load(root)) == 1


# --- bad input ---------------------------------------------------------------------------------

def _rows(n=4, seed=3):
    images, labels, splits = faces(n, seed)
    return [f"{lab},{pixel_text(im)},{s}" for im, lab, s in zip(images, labels, splits)]


def _csv_with(row_index, new_row, blank_before=False):
    rows = _rows()
    rows[row_index] = new_row
    lines = ["emotion,pixels,Usage"] + (["", "  "] if blank_before else []) + rows
    return ("\n".join(lines) + "\n").encode()


ROW = _rows()[1]
LABEL, PIXELS, USAGE = ROW.split(",")


@pytest.mark.parametrize("name, content, match", [
    ("empty.csv", b"", r"empty\.csv: the file is empty"),
    ("blank.csv", b"\n \r\n", r"blank\.csv: the file is empty"),
    ("header.csv", b"emotion,pixels,Usage\r\n", r"header\.csv: has a header .* but no data rows"),
    ("cols.csv", b"foo,bar\n1,2\n",
     r"cols\.csv: unknown columns \['foo', 'bar'\].*emotion,pixels,Usage \(Kaggle fer2013\.csv\).*label,feature"),
    ("short.csv", _csv_with(1, f"{LABEL},{PIXELS.rsplit(' ', 1)[0]},{USAGE}"),
     r"short\.csv, data row 2 \(line 3\): has 2303 pixel values, expected 2304"),
    ("long.csv", _csv_with(2, f"{LABEL},{PIXELS} 7,{USAGE}", blank_before=True),
     r"long\.csv, data row 3 \(line 6\): has 2305 pixel values"),
    ("word.csv", _csv_with(3, f"{LABEL},{PIXELS.replace(' ', ' abc ', 1)},{USAGE}"),
     r"word\.csv, data row 4 \(line 5\): pixel 2 is 'abc', which is not a number"),
    ("negative.csv", _csv_with(0, f"{LABEL},-{PIXELS},{USAGE}"),
     r"negative\.csv, data row 1 \(line 2\): pixel 1 is '-\d+', which is not a number"),
    ("float.csv", _csv_with(0, f"{LABEL},1.5 {PIXELS.split(' ', 1)[1]},{USAGE}"),
     r"pixel 1 is '1\.5', which is not a number"),
    ("big.csv", _csv_with(1, f"{LABEL},{'12 ' * 6}256 {PIXELS.split(' ', 7)[7]},{USAGE}"),
     r"big\.csv, data row 2 \(line 3\): pixel 7 is 256, outside 0-255"),
    ("huge.csv", _csv_with(1, f"{LABEL},{'12 ' * 6}1000 {PIXELS.split(' ', 7)[7]},{USAGE}"),
     r"data row 2 \(line 3\): pixel 7 is 1000, outside 0-255"),
    ("label7.csv", _csv_with(2, f"7,{PIXELS},{USAGE}"),
     r"label7\.csv, data row 3 \(line 4\): emotion '7' is not a class index; expected an integer 0-6"),
    ("labelx.csv", _csv_with(0, f"happy,{PIXELS},{USAGE}"), r"data row 1 \(line 2\): emotion 'happy' is not a class"),
    ("fields.csv", _csv_with(1, f"{LABEL},{PIXELS}"),
     r"fields\.csv, data row 2 \(line 3\): has 2 fields, expected 3 \(emotion,pixels,Usage\)"),
    ("usage.csv", _csv_with(3, f"{LABEL},{PIXELS},Holdout"),
     r"usage\.csv, data row 4 \(line 5\): Usage 'Holdout' is not a split"),
    ("endless.csv", b"emotion,pixels,Usage\n0," + b"1 " * 600_000,
     r"endless\.csv, line 2: is longer than 1 MB without a line break"),
])
def test_bad_csv(tmp_path, home, name, content, match):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=match):
        load(path)
    assert cache_files(home) == []
    # The same error from a gzipped copy: messages do not depend on the container.
    packed = write(tmp_path / (name + ".gz"), gzip.compress(content))
    if content:
        with pytest.raises(ValueError, match=match.replace(r"\.csv", r"\.csv\.gz", 1)):
            load(packed)
    assert cache_files(home) == []


def test_first_bad_row_is_found_far_into_a_big_file(tmp_path, monkeypatch):
    images, labels, splits = faces(260, seed=4)
    rows = kaggle_csv(images, labels, splits).split(b"\n")
    rows[200] = rows[200].replace(b" ", b" 300 ", 1)  # data row 200: one value too many, and 300
    rows[230] = rows[230].replace(b" ", b" x ", 1)
    monkeypatch.setattr(data, "_READ_BYTES", 50_000)
    monkeypatch.setattr(data, "_GZIP_IN_BYTES", 10_000)
    path = write(tmp_path / "big.csv.gz", gzip.compress(b"\n".join(rows)))
    with pytest.raises(ValueError, match=r"big\.csv\.gz, data row 200 \(line 201\): pixel 2 is 300, outside 0-255"):
        load(path)
    # The decompressing thread stops when parsing fails.
    assert not [t for t in threading.enumerate() if t.name == "fervis-gunzip"]


def _truncated_gzip(tmp):
    return write(tmp / "cut.csv.gz", gzip.compress(kaggle_csv(IMAGES, LABELS, SPLITS_OF))[:5000])


def _garbage_zip(tmp):
    return write(tmp / "bad.zip", b"PK\x03\x04" + b"\x00" * 100)


def _two_csvs_in_zip(tmp):
    csv_bytes = kaggle_csv(IMAGES[:2], LABELS[:2], SPLITS_OF[:2])
    return zip_of(tmp / "two.zip", {"a/train.csv": csv_bytes, "b/test.csv": csv_bytes})


def _two_csvs_in_folder(tmp):
    csv_bytes = kaggle_csv(IMAGES[:2], LABELS[:2], SPLITS_OF[:2])
    write(tmp / "both" / "train.csv", csv_bytes)
    write(tmp / "both" / "test.csv.gz", gzip.compress(csv_bytes))
    return tmp / "both"


def _zip_slip(tmp):
    return zip_of(tmp / "evil.zip", {"train/angry/ok.png": png(IMAGES[0]), "../evil.png": png(IMAGES[1])})


def _unknown_emotion(tmp):
    return _tree(tmp / "faces", ["train/angry/a.png", "train/angri/b.png"])


def _unknown_emotion_in_zip(tmp):
    return zip_of(tmp / "faces.zip", {"train/happy/a.png": png(IMAGES[0]), "train/joy/b.png": png(IMAGES[1])})


def _text_as_image(tmp):
    root = _tree(tmp / "faces", ["train/angry/a.png"])
    write(root / "train/angry/notes.txt", b"not a picture")
    return root


def _corrupt_png(tmp):
    root = _tree(tmp / "faces", ["train/angry/a.png"])
    write(root / "train/fear/b.png", png(IMAGES[1])[:60])
    return root


def _corrupt_in_zip(tmp):
    return zip_of(tmp / "faces.zip", {"train/sad/a.png": png(IMAGES[0])[:40]})


def _bad_row_in_zipped_csv(tmp):
    return zip_of(tmp / "bad.zip", {"data/fer2013.csv": _csv_with(1, f"{LABEL},{PIXELS} 1 2,{USAGE}")})


def _single_image(tmp):
    return write(tmp / "face.png", png(IMAGES[0]))


def _empty_folder(tmp):
    (tmp / "nothing").mkdir()
    return tmp / "nothing"


@pytest.mark.parametrize("build, match", [
    (_truncated_gzip, r"cut\.csv\.gz: is not a readable gzip file"),
    (_garbage_zip, r"bad\.zip: is not a readable zip file"),
    (_two_csvs_in_zip, r"two\.zip: the zip holds 2 CSV files \(a/train\.csv, b/test\.csv\)"),
    (_two_csvs_in_folder, r"both: holds 2 CSV files \(test\.csv\.gz, train\.csv\)"),
    (_zip_slip, r"evil\.zip: member '\.\./evil\.png' has an unsafe path"),
    (_unknown_emotion, r"faces: image 'train/angri/b\.png' is in folder 'angri', which is not an emotion"),
    (_unknown_emotion_in_zip, r"faces\.zip: image 'train/joy/b\.png' is in folder 'joy', which is not an emotion"),
    (_text_as_image, r"faces: file 'train/angry/notes\.txt' in emotion folder 'angry' is not an image"),
    (_corrupt_png, r"faces: file 'train/fear/b\.png' in emotion folder 'fear' is a corrupt image"),
    (_corrupt_in_zip, r"faces\.zip: file 'train/sad/a\.png' in emotion folder 'sad' is a corrupt image"),
    (_bad_row_in_zipped_csv, r"bad\.zip \(member data/fer2013\.csv\), data row 2 \(line 3\): has 2306 pixel"),
    (_single_image, r"face\.png: is a single image; pass the folder"),
    (_empty_folder, r"nothing: holds no images and no CSV"),
])
def test_bad_files_and_trees(tmp_path, home, build, match):
    path = build(tmp_path)
    with pytest.raises(ValueError, match=match):
        load(path)
    assert cache_files(home) == []
    assert not (tmp_path.parent / "evil.png").exists()


def test_nonexistent_path_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"'source' parameter of fervis\.data\.load .* Got '.*nope\.csv' instead, "
                                         r"which does not exist"):
        load(tmp_path / "nope.csv")
    with pytest.raises(TypeError, match=r"'source' parameter .* Got 3 of type int instead"):
        load(3)
    path, _, _ = _kaggle(tmp_path)
    with pytest.raises(TypeError, match="'strict' and 'cache' parameters"):
        load(path, strict="yes")


# --- cache -------------------------------------------------------------------------------------

def test_cache_round_trip(tmp_path, home, monkeypatch):
    path, _, _ = _kaggle_gz(tmp_path)
    first = load(path)
    files = cache_files(home)
    assert len(files) == 1 and files[0].endswith(".npz")  # no temporary file left beside it

    def no_parsing(*args):
        raise AssertionError("the second load parsed the file instead of reading the cache")

    parse = data._read
    monkeypatch.setattr(data, "_read", no_parsing)
    second = load(path)
    assert second == first and second.fingerprint == first.fingerprint
    assert not second.images.flags.writeable and not second.labels.flags.writeable
    assert not second.splits.flags.writeable
    np.testing.assert_array_equal(second.splits, first.splits)
    with np.load(home / "data" / files[0], allow_pickle=False) as stored:
        np.testing.assert_array_equal(stored["images"], IMAGES)
    monkeypatch.setattr(data, "_read", parse)

    # A changed file is a cache miss; cache=False neither reads nor writes the cache.
    write(path, gzip.compress(kaggle_csv(IMAGES[::-1], LABELS, SPLITS_OF)))
    os.utime(path, ns=(1, 1))
    assert load(path).fingerprint != first.fingerprint
    assert len(cache_files(home)) == 2
    other, _, _ = _course_train(tmp_path)
    load(other, cache=False)
    assert len(cache_files(home)) == 2


def test_unreadable_cache_is_a_miss(tmp_path, home):
    path, _, _ = _kaggle(tmp_path)
    first = load(path)
    (cached,) = (home / "data").iterdir()
    cached.write_bytes(b"PK\x03\x04 half a file")
    assert load(path) == first
    with np.load(cached, allow_pickle=False) as stored:  # rewritten whole
        assert stored["images"].shape == (12, 48, 48)


def test_failed_cache_write_leaves_nothing_behind(tmp_path, home, monkeypatch):
    path, _, _ = _kaggle(tmp_path)

    def half_write(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", half_write)
    with pytest.warns(UserWarning, match=r"could not write the data cache in .*\(Cannot write data cache .*\.npz' "
                                         r"\(via .*\): No space left on device\)"):
        ds = load(path)
    np.testing.assert_array_equal(ds.images, IMAGES)
    assert cache_files(home) == []


def test_cache_of_an_image_tree_sees_changed_files(tmp_path, home):
    root = _tree(tmp_path / "faces", ["train/angry/a.png", "train/happy/b.png"])
    assert len(load(root)) == 2
    write(root / "train/happy/c.png", png(IMAGES[0]))
    assert len(load(root)) == 3
    assert len(cache_files(home)) == 2


# --- Dataset -------------------------------------------------------------------------------------

def numbered(n=700, seed=5):
    """A dataset whose image i carries i in its first two pixels, so rows can be traced."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    labels = rng.choice(7, n, p=[0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])
    splits = np.where(np.arange(n) < n * 0.8, "Training", "PublicTest")
    return Dataset(images=images, labels=labels, splits=splits, source="test")


def ids(ds):
    return ds.images[:, 0, 0].astype(int) + 256 * ds.images[:, 0, 1].astype(int)


def test_dataset_arrays_are_read_only_and_copied():
    images, labels, splits = faces(10)
    ds = Dataset(images=images, labels=labels, splits=splits)
    images[0] = 0  # the caller's array stays theirs
    assert ds.images[0].any() and ds.class_names == CLASS_NAMES
    for derived in (ds, ds.take([1, 2]), ds.subset("Training"), ds.sample(5), ds.train_val_split(0.3)[1]):
        for array in (derived.images, derived.labels, derived.splits):
            assert not array.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                array[...] = 0
    x = ds.x()
    assert x.dtype == np.float32 and x.shape == (10, 48, 48, 1) and x.flags.writeable
    x[...] = 0
    assert ds.images.any()


@pytest.mark.parametrize("kwargs, match", [
    ({"images": np.zeros((2, 48, 48), np.float32)},
     r"'images' parameter of Dataset must be a uint8 .* Got dtype float32"),
    ({"images": np.zeros((2, 28, 28), np.uint8)},
     r"shape \(n, 48, 48\)\. Got dtype uint8 and shape \(2, 28, 28\)"),
    ({"labels": [0, 7]}, r"'labels' parameter of Dataset must hold class indices 0-6 or -1 .* from 0 to 7"),
    ({"labels": [0]}, r"'labels' parameter .* shape \(2,\)"),
    ({"splits": ["Training", "Holdout"]}, r"'splits' parameter of Dataset must hold only .* Got \['Holdout'\]"),
    ({"regions": np.zeros((2, 8, 8), np.uint8)}, r"'regions' parameter .* Got dtype uint8 and shape \(2, 8, 8\)"),
    ({"regions": np.full((2, 48, 48), 300)}, r"'regions' parameter of Dataset must be None or an integer array of "
                                             r"region ids 0-255"),
])
def test_dataset_validation(kwargs, match):
    base = {"images": np.zeros((2, 48, 48), np.uint8), "labels": [0, 1], "splits": ["Training", "PublicTest"]}
    with pytest.raises(ValueError, match=match):
        Dataset(**{**base, **kwargs})


def test_subset_counts_take_and_len():
    ds = numbered()
    train = ds.subset("Training")
    assert set(train.splits) == {"Training"} and len(train) == 560
    assert ds.subset("train") == train  # an alias users type
    with pytest.raises(ValueError, match=r"one of the splits present, \['Training', 'PublicTest'\]\. "
                                         r"Got 'PrivateTest' instead"):
        ds.subset("PrivateTest")
    counts = ds.counts()
    assert isinstance(counts, pd.DataFrame)
    assert list(counts.index) == ["Training", "PublicTest"] and list(counts.columns) == list(CLASS_NAMES)
    assert counts.to_numpy().sum() == len(ds)
    assert counts.loc["Training", "happy"] == np.count_nonzero((ds.labels == 3) & (ds.splits == "Training"))
    np.testing.assert_array_equal(ids(ds.take([5, 1, 5])), [5, 1, 5])
    np.testing.assert_array_equal(ids(ds.take(ds.labels == 1)), np.flatnonzero(ds.labels == 1))
    assert len(ds.take([])) == 0
    with pytest.raises(ValueError, match=r"'indices' parameter of Dataset\.take must lie in \[-700, 700\)"):
        ds.take([700])
    with pytest.raises(ValueError, match=r"'indices' .* Got dtype float64"):
        ds.take([0.5])


def test_unlabeled_counts_and_flag(tmp_path):
    path, _, _ = _course_test(tmp_path)
    ds = load(path)
    assert not ds.labeled
    assert ds.counts().loc["PublicTest", "unlabeled"] == 12


@pytest.mark.parametrize("n", [70, 140, 333])
def test_stratified_sample_keeps_class_shares(n):
    ds = numbered()
    sample = ds.sample(n, seed=1)
    assert len(sample) == n and len(set(ids(sample))) == n
    assert np.all(np.diff(ids(sample)) > 0)  # original order
    expected = np.bincount(ds.labels, minlength=7) * n / len(ds)
    assert np.all(np.abs(np.bincount(sample.labels, minlength=7) - expected) < 1)
    assert sample == ds.sample(n, seed=1) and sample != ds.sample(n, seed=2)
    assert len(ds.sample(n, stratify=False)) == n


def test_sample_argument_errors():
    ds = numbered(20)
    for bad in (21, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"'n' parameter of Dataset\.sample must be an int in \[0, 20\]"):
            ds.sample(bad)


def test_train_val_split_is_disjoint_and_stratified():
    ds = numbered().subset("Training")
    train, val = ds.train_val_split(0.2, seed=3)
    assert len(val) == 112 and len(train) == 448
    assert set(ids(train)).isdisjoint(ids(val)) and set(ids(train)) | set(ids(val)) == set(ids(ds))
    expected = np.bincount(ds.labels, minlength=7) * 0.2
    assert np.all(np.abs(np.bincount(val.labels, minlength=7) - expected) < 1)
    again = ds.train_val_split(0.2, seed=3)
    assert again[0] == train and again[1] == val
    for bad in (0, 1.0, -0.1, "0.1", 0.0001):
        with pytest.raises(ValueError, match=r"'val_fraction' parameter of Dataset\.train_val_split"):
            ds.train_val_split(bad)


def test_take_keeps_regions(synthetic_small):
    part = synthetic_small.take([3, 0])
    np.testing.assert_array_equal(part.regions, synthetic_small.regions[[3, 0]])
    assert part.region_names == synthetic_small.region_names and not part.regions.flags.writeable


def test_load_synthetic(monkeypatch):
    from fervis import synthetic

    monkeypatch.setattr(synthetic, "make_dataset", functools.partial(synthetic.make_dataset, n_train=35, n_test=14))
    ds = load("synthetic")
    assert ds.source == "synthetic" and len(ds) == 49
    assert set(ds.splits) == {"Training", "PublicTest"} and ds.regions is not None


def test_synthetic_faces_are_cached(home, monkeypatch):
    """Each notebook loads them in a fresh process: the second load reads, not renders."""
    from fervis import synthetic

    small = functools.partial(synthetic.make_dataset, n_train=35, n_test=14)
    monkeypatch.setattr(synthetic, "make_dataset", small)
    first = load("synthetic")
    assert len(cache_files(home)) == 1

    def no_rendering():
        raise AssertionError("the second load rendered the faces instead of reading the cache")

    monkeypatch.setattr(synthetic, "make_dataset", no_rendering)
    second = load("synthetic")
    assert second == first and second.fingerprint == first.fingerprint and second.source == "synthetic"
    np.testing.assert_array_equal(second.regions, first.regions)
    assert second.region_names == synthetic.REGION_NAMES and not second.regions.flags.writeable
    # The fingerprint is the one the faces have when drawn (the packaged model's card checks it).
    assert second.fingerprint == fingerprint_arrays(first.images, first.labels, first.splits, first.regions)
    with pytest.raises(AssertionError, match="rendered the faces"):
        load("synthetic", cache=False)
    # Other code (or numpy) draws other faces: another key, so the stale file is never read.
    monkeypatch.setattr(data, "_synthetic_key", lambda: "0" * 32)
    with pytest.raises(AssertionError, match="rendered the faces"):
        load("synthetic")


def test_fingerprint_arrays():
    a = np.arange(10, dtype=np.uint8)
    assert fingerprint_arrays(a) == fingerprint_arrays(a.copy())
    assert fingerprint_arrays(a) != fingerprint_arrays(a.astype(np.int64))  # dtype counts
    assert fingerprint_arrays(a) != fingerprint_arrays(a.reshape(2, 5))  # shape counts
    assert fingerprint_arrays(a, None) != fingerprint_arrays(a)
    names = ["Training", "PublicTest"]
    assert fingerprint_arrays(np.array(names, "<U10")) == fingerprint_arrays(np.array(names, "<U11"))
    assert fingerprint_arrays(np.array(names)) != fingerprint_arrays(np.array(names[::-1]))
    assert len(fingerprint_arrays(a)) == 32
    with pytest.raises(ValueError, match="numeric or fixed-width string arrays"):
        fingerprint_arrays(np.array([{}], dtype=object))


def test_describe_reports_duplicates_blanks_and_stats():
    images, labels, _ = faces(8, seed=6)
    images[2] = 0                 # blank
    images[5] = images[1]         # duplicate across splits with another label
    labels = np.array([0, 3, 0, 1, 2, 4, 5, 6])
    splits = np.array(["Training"] * 4 + ["PublicTest"] * 4)
    ds = Dataset(images=images, labels=labels, splits=splits)
    report = describe(ds)
    assert report["n_images"] == 8 and report["constant_images"] == [2]
    assert report["duplicate_groups"] == [[1, 5]]
    assert report["counts"]["Training"]["angry"] == 2
    flat = images.astype(np.float64)
    assert report["pixels"]["mean"] == pytest.approx(flat.mean())
    assert report["pixels"]["std"] == pytest.approx(flat.std())
    assert report["pixels"]["min"] == 0 and report["pixels"]["max"] == images.max()
    text = " ".join(report["problems"])
    for phrase in ("1 images have a single grey level", "1 images duplicate another image",
                   "span several splits", "carry different labels",
                   "PublicTest has no images of angry, disgust, happy"):
        assert phrase in text
    clean = describe(numbered())
    assert clean["problems"] == [] and clean["duplicate_groups"] == []
    empty = describe(ds.take([]))
    assert empty["n_images"] == 0 and empty["counts"] == {} and empty["problems"] == []


def test_import_is_light():
    code = ("import sys, fervis.data; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'pandas', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "[]"


@pytest.mark.fer2013
def test_real_fer2013_counts(fer2013_path):
    ds = load(fer2013_path)
    counts = ds.counts()
    assert list(counts.index) == ["Training", "PublicTest"]
    assert counts.loc["Training"].tolist() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert counts.loc["PublicTest"].tolist() == [467, 56, 496, 895, 653, 415, 607]
    assert ds.images.shape == (32298, 48, 48) and ds.labeled


# --- hardening: bounded memory and time, special files, the cache keyed by content ----------------

_MEMORY_CAPPED = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))
from fervis import data
data._MAX_TEXT_BYTES = 128 << 20
try:
    data.load(sys.argv[1], cache=False)
except ValueError as err:
    print(err)
"""


def test_gzip_in_a_zip_is_streamed_under_a_memory_cap(tmp_path):
    # 1/3 MB on disk: a zip whose member is a 300 MB stored (level 0) .csv.gz of blank lines.
    # Reading the member whole needs 300 MB and more; streamed, it stays in tens of MB and
    # stops at the text cap (lowered to 128 MiB here) with an error naming the file.
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("fer2013.csv.gz", "w", force_zip64=True) as member:
            with gzip.GzipFile(fileobj=member, mode="wb", compresslevel=0) as text:
                text.write(b"emotion,pixels,Usage\n")
                for _ in range(300):
                    text.write(b"\n" * (1 << 20))
    assert bomb.stat().st_size < 1 << 20
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", _MEMORY_CAPPED, str(bomb)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bomb.zip (member fer2013.csv.gz): holds more than 0.125 GiB of text" in done.stdout


def test_plain_gzip_is_streamed_not_read_whole(tmp_path, monkeypatch):
    path, labels, _ = _kaggle_gz(tmp_path)

    def whole(self):
        raise AssertionError(f"{self} was read whole")

    monkeypatch.setattr(type(path), "read_bytes", whole)
    monkeypatch.setattr(data, "_GZIP_IN_BYTES", 1000)  # many compressed pieces
    np.testing.assert_array_equal(load(path, cache=False).labels, labels)


def test_text_cap_names_the_file_and_the_cap(tmp_path, monkeypatch):
    path = write(tmp_path / "big.csv", kaggle_csv(IMAGES, LABELS, SPLITS_OF))
    monkeypatch.setattr(data, "_MAX_TEXT_BYTES", 50_000)
    with pytest.raises(ValueError, match=r"big\.csv: is 0\.0 GiB, more than the 4\.65661e-05 GiB"):
        load(path, cache=False)
    packed = write(tmp_path / "big.csv.gz", gzip.compress(kaggle_csv(IMAGES, LABELS, SPLITS_OF)))
    with pytest.raises(ValueError, match=r"big\.csv\.gz: holds more than .* GiB of text \(after decompression\)"):
        load(packed, cache=False)


def test_blank_lines_are_skipped_in_bulk_and_counted(tmp_path):
    # 32 MB of blank lines (LF and CRLF) between two rows: skipped line by line in Python this took
    # half a minute; the bad row after them is still reported with its line number in the file.
    rows = kaggle_csv(IMAGES[:2], LABELS[:2], SPLITS_OF[:2]).split(b"\n")
    blank = b"\n" * (16 << 20) + b" \r\n" * ((16 << 20) // 3)
    n_blank = blank.count(b"\n")
    bad = b"0,1 2 3,Training\n"
    path = write(tmp_path / "blanks.csv", rows[0] + b"\n" + rows[1] + b"\n" + blank + rows[2] + b"\n" + bad)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"data row 3 \(line {n_blank + 4}\): has 3 pixel values"):
        load(path, cache=False)
    assert time.perf_counter() - start < 10
    good = write(tmp_path / "good.csv", rows[0] + b"\n" + blank + b"\n".join(rows[1:]))
    np.testing.assert_array_equal(load(good, cache=False).images, IMAGES[:2])


def _fifo(folder):
    os.mkfifo(folder / "b.png")


def _dev_zero(folder):
    os.symlink("/dev/zero", folder / "b.png")


def _sparse(folder):
    with open(folder / "b.png", "wb") as f:
        f.truncate(data._MAX_IMAGE_BYTES + 1)  # a sparse file: no disk used


@pytest.mark.parametrize("plant, match", [
    (_fifo, r"image 'train/happy/b\.png' is not a regular file"),
    (_dev_zero, r"image 'train/happy/b\.png' is not a regular file"),
    (_sparse, r"image 'train/happy/b\.png' is 67108865 bytes, more than the 64 MiB"),
], ids=["fifo", "symlink-to-dev-zero", "sparse-2GB-image"])
def test_image_tree_reads_only_regular_files_of_bounded_size(tmp_path, home, plant, match):
    import signal

    root = _tree(tmp_path / "faces", ["train/angry/a.png"])
    (root / "train/happy").mkdir(parents=True)
    plant(root / "train/happy")

    def hung(*_):
        raise AssertionError("load hung on a special file")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match=match):
            load(root)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert cache_files(home) == []


def test_special_file_as_source_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fer2013.csv")
    with pytest.raises(ValueError, match=r"fer2013\.csv: is neither a regular file nor a folder"):
        load(tmp_path / "fer2013.csv")


def test_unreadable_class_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    root = _tree(tmp_path / "faces", ["train/angry/a.png", "train/happy/b.png"])
    scandir = os.scandir

    def denied(path="."):
        if os.fspath(path).endswith("happy"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)  # chmod 000 does not stop root, who may run this
    with pytest.raises(ValueError, match=r"faces/train/happy: cannot be read \(Permission denied\)"):
        load(root)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    wide = (IMAGES[0].astype(np.uint16) * 257).astype(np.uint16)  # 0-255 spread over 0-65535
    out = io.BytesIO()
    Image.fromarray(wide).save(out, format="PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")
    root = tmp_path / "faces"
    write(root / "train/angry/a.png", out.getvalue())
    np.testing.assert_array_equal(load(root, cache=False).images[0], IMAGES[0])


def test_image_error_does_not_show_a_buffer_repr(tmp_path):
    root = tmp_path / "faces"
    write(root / "train/angry/a.png", b"\x89PNG but not really")
    with pytest.raises(ValueError) as err:
        load(root, cache=False)
    assert "BytesIO" not in str(err.value) and "train/angry/a.png" in str(err.value)


def test_cache_is_keyed_by_content_not_size_and_mtime(tmp_path, home):
    path, _, _ = _kaggle(tmp_path)
    first = load(path)
    stat = path.stat()
    relabelled = LABELS[::-1].copy()
    write(path, kaggle_csv(IMAGES, relabelled, SPLITS_OF))  # same size: one digit per label
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or `rsync -t` leave it
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    second = load(path)
    np.testing.assert_array_equal(second.labels, relabelled)
    assert second.fingerprint != first.fingerprint


def test_inconsistent_cache_file_is_a_miss(tmp_path, home):
    path, labels, _ = _kaggle(tmp_path)
    load(path)
    (cached,) = (home / "data").iterdir()
    with np.load(cached, allow_pickle=False) as stored:
        arrays = dict(stored)
    arrays["labels"] = arrays["labels"][:5]  # well formed, but 5 labels for 12 images
    with open(cached, "wb") as f:
        np.savez(f, **arrays)
    np.testing.assert_array_equal(load(path).labels, labels)


def test_empty_path_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"Got '' instead \(an empty path"):
        load("")


def test_non_utf8_file_name(tmp_path):
    path = os.path.join(os.fsencode(tmp_path), b"fer\xff2013.csv")
    with open(path, "wb") as f:
        f.write(kaggle_csv(IMAGES, LABELS, SPLITS_OF))
    name = os.fsdecode(path)
    np.testing.assert_array_equal(load(name).labels, LABELS)
    np.testing.assert_array_equal(load(name).labels, LABELS)  # from the cache


def test_dataset_lives_below_data_and_synthetic():
    """One Dataset class: data re-exports it, synthetic builds it without importing data."""
    import ast
    import pathlib

    from fervis import dataset, synthetic

    assert data.Dataset is dataset.Dataset and data.fingerprint_arrays is dataset.fingerprint_arrays
    assert isinstance(synthetic.make_dataset(n_train=7, n_test=7), data.Dataset)
    tree = ast.parse(pathlib.Path(synthetic.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "fervis.data" not in imported and "fervis.dataset" in imported
    assert data.load("synthetic").subset("train").splits[0] == "Training"  # split aliases still resolve
