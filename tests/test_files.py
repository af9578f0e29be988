import os

import pytest

from fervis.files import write_atomic


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
