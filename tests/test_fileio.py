import os
import stat

import pytest

from sparsecell.formats.fileio import atomic_path, atomic_write_text


def test_atomic_write_has_normal_permissions_and_replaces(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "out.json", "one")
    assert p.read_text() == "one"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    atomic_write_text(p, "two")
    assert p.read_text() == "two"


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    p = atomic_write_text(tmp_path / "out.csv", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-way")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.csv"]
