import os

import pytest

from fervis.files import fervis_home, temporary_path, write_atomic


def test_writes_text_and_bytes_whole(tmp_path):
    path = tmp_path / "a.txt"
    assert write_atomic(path, "héllo\n") == path
    assert path.read_text(encoding="utf-8") == "héllo\n"
    write_atomic(str(path), b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]  # no temporary file left beside it


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(path, "\udcff", encoding="utf-8")  # a lone surrogate cannot be encoded
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_other_data_is_refused_naming_the_file(tmp_path):
    with pytest.raises(TypeError, match=r"a\.txt.*Got list"):
        write_atomic(tmp_path / "a.txt", ["x"])
    assert os.listdir(tmp_path) == []


def test_a_planted_symlink_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path = tmp_path / "a.txt"
    # The temporary name the old code used, and the target itself, planted as symlinks to the victim.
    os.symlink(victim, tmp_path / f".a.txt.{os.getpid()}.tmp")
    os.symlink(victim, path)
    write_atomic(path, "new")
    assert victim.read_text() == "keep me"
    assert not path.is_symlink() and path.read_text() == "new"


def test_temporary_files_are_new_and_files_keep_a_readable_mode(tmp_path):
    path = tmp_path / "a.txt"
    first, second = temporary_path(path), temporary_path(path)
    assert first != second and first.parent == tmp_path and first.name.startswith(".a.txt.")
    write_atomic(path, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    path.chmod(0o640)
    write_atomic(path, "y")
    assert path.stat().st_mode & 0o777 == 0o640


def test_relative_fervis_home_is_made_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERVIS_HOME", "cache")
    assert fervis_home() == tmp_path / "cache"
    assert os.environ["FERVIS_HOME"] == str(tmp_path / "cache")  # what child processes inherit
    monkeypatch.chdir("/")
    assert fervis_home() == tmp_path / "cache"


def test_a_writer_function_fills_the_temporary_and_a_failure_names_the_file(tmp_path):
    path = tmp_path / "m.keras"
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"model")

    write_atomic(path, write, suffix=".keras", what="model")
    assert path.read_bytes() == b"model" and seen[0].name.endswith(".keras") and seen[0].parent == tmp_path
    assert os.listdir(tmp_path) == ["m.keras"]

    def full_disk(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"Cannot write model '.*m\.keras' \(via \.m\.keras\..*\.keras\): No space") as err:
        write_atomic(path, full_disk, suffix=".keras", what="model")
    assert err.value.errno == 28
    assert path.read_bytes() == b"model" and os.listdir(tmp_path) == ["m.keras"]  # the old file, no temporary
