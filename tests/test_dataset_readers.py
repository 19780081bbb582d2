"""Each data set's own annotation reader (SHIDC JSON, CRCHisto .mat, BCData .h5), on
small fixtures written here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparsecell.datasets.bcdata import read_bcdata
from sparsecell.datasets.crchisto import CLASSES as CRCHISTO_CLASSES
from sparsecell.datasets.crchisto import read_crchisto
from sparsecell.datasets.shidc import read_shidc
from sparsecell.errors import AnnotationError


def _write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


# ---------------------------------------------------------------------------------------
# SHIDC
# ---------------------------------------------------------------------------------------
def test_shidc(tmp_path):
    doc = [
        {"x": 10, "y": 20, "label_id": 1},
        {"x": 11.5, "y": 21, "label_id": 2},
        {"x": 12, "y": 22, "label_id": 3},
        {"x": 13, "y": 23, "label_id": 1},
    ]
    p = read_shidc(_write(tmp_path / "p1.json", json.dumps(doc)))
    assert p.classes == ("positive", "negative", "til")
    np.testing.assert_array_equal(p.labels, [0, 1, 2, 0])
    np.testing.assert_array_equal(p.xy, [[10, 20], [11.5, 21], [12, 22], [13, 23]])
    assert p.counts() == {"positive": 2, "negative": 1, "til": 1}
    assert len(read_shidc(_write(tmp_path / "e.json", "[]"))) == 0


def test_shidc_errors(tmp_path):
    with pytest.raises(AnnotationError, match=r"bad\.json: entry 1 has label_id 4"):
        read_shidc(_write(tmp_path / "bad.json", json.dumps([{"x": 1, "y": 1, "label_id": 1}, {"x": 1, "y": 1, "label_id": 4}])))
    with pytest.raises(AnnotationError, match="entry 0 is not an object"):
        read_shidc(_write(tmp_path / "k.json", json.dumps([{"x": 1, "y": 1}])))
    with pytest.raises(AnnotationError, match="expected a JSON list"):
        read_shidc(_write(tmp_path / "d.json", json.dumps({"x": 1})))
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_shidc(_write(tmp_path / "j.json", "[{"))


# ---------------------------------------------------------------------------------------
# CRCHisto (.mat, 1-based)
# ---------------------------------------------------------------------------------------
def _savemat(path, arr):
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"detection": np.asarray(arr)})


def test_crchisto_split_layout_one_based(tmp_path):
    d = tmp_path / "train" / "img3"
    _savemat(d / "img3_detection.mat", np.array([[1.0, 1.0], [10.5, 20.0], [500.0, 3.0]]))
    _savemat(d / "img3_epithelial.mat", np.array([[1.0, 1.0]]))
    _savemat(d / "img3_inflammatory.mat", np.array([[10.5, 20.0]]))
    _savemat(d / "img3_others.mat", np.zeros((0, 2), np.uint8))  # how the real files store "none"
    # no fibroblast file: no cell of that class
    p = read_crchisto(tmp_path / "train", "img3")
    assert p.classes == ("nucleus",)
    np.testing.assert_array_equal(p.xy, [[0, 0], [9.5, 19], [499, 2]])  # (1, 1) reads as (0, 0)
    q = read_crchisto(tmp_path / "train", "img3", mode="classes")
    assert q.classes == CRCHISTO_CLASSES
    np.testing.assert_array_equal(q.xy, [[0, 0], [9.5, 19]])
    assert [q.classes[k] for k in q.labels] == ["epithelial", "inflammatory"]


def test_crchisto_authors_layout(tmp_path):
    _savemat(tmp_path / "Detection" / "img7" / "img7_detection.mat", [[1, 1], [5, 6], [7, 8]])
    for name, xy in [("epithelial", [[5, 6]]), ("fibroblast", [[7, 8]]), ("inflammatory", [[1, 1]])]:
        _savemat(tmp_path / "Classification" / "img7" / f"img7_{name}.mat", xy)
    p = read_crchisto(tmp_path, "img7")
    np.testing.assert_array_equal(p.xy, [[0, 0], [4, 5], [6, 7]])
    q = read_crchisto(tmp_path, "img7", mode="classes")
    assert q.counts() == {"epithelial": 1, "fibroblast": 1, "inflammatory": 1, "others": 0}
    np.testing.assert_array_equal(q.of_class(0).xy, [[4, 5]])


def test_crchisto_edge_clicks_clamped(tmp_path):
    # The real files hold a few clicks just outside the first pixel (values down to 0.15):
    # they map to the edge; anything further out stays outside for check_inside to report.
    _savemat(tmp_path / "img1" / "img1_detection.mat", [[0.274, 428.523], [53.5, 0.58], [-2, 5]])
    p = read_crchisto(tmp_path, "img1")
    np.testing.assert_allclose(p.xy, [[0, 427.523], [52.5, 0], [-3, 4]])


def test_crchisto_errors(tmp_path):
    with pytest.raises(AnnotationError, match=r"img1_detection\.mat: annotation file not found"):
        read_crchisto(tmp_path, "img1")
    with pytest.raises(AnnotationError, match="CRCHisto image folder not found"):
        read_crchisto(tmp_path, "img1", mode="classes")
    from scipy.io import savemat

    (tmp_path / "img2").mkdir()
    savemat(tmp_path / "img2" / "img2_detection.mat", {"points": np.ones((2, 2))})
    with pytest.raises(AnnotationError, match=r"no key 'detection' \(found \['points'\]\)"):
        read_crchisto(tmp_path, "img2")
    _savemat(tmp_path / "img3" / "img3_detection.mat", np.ones((2, 3)))
    with pytest.raises(AnnotationError, match=r"shape \(2, 3\)"):
        read_crchisto(tmp_path, "img3")
    (tmp_path / "img4").mkdir()
    (tmp_path / "img4" / "img4_detection.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(AnnotationError, match="not a readable MATLAB file"):
        read_crchisto(tmp_path, "img4")
    with pytest.raises(ValueError, match="mode"):
        read_crchisto(tmp_path, "img3", mode="nuclei")


# ---------------------------------------------------------------------------------------
# BCData (.h5, 0-based)
# ---------------------------------------------------------------------------------------
def _h5(path, arr, key="coordinates"):
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset(key, data=np.asarray(arr))


def test_bcdata(tmp_path):
    ann = tmp_path / "annotations" / "test"
    _h5(ann / "positive" / "4.h5", np.array([[0, 0], [12, 30]], np.int64))
    _h5(ann / "negative" / "4.h5", np.array([[639, 5]], np.int64))
    p = read_bcdata(tmp_path, "test", 4)
    assert p.classes == ("positive", "negative")
    np.testing.assert_array_equal(p.xy, [[0, 0], [12, 30], [639, 5]])  # 0-based: unchanged
    np.testing.assert_array_equal(p.labels, [0, 0, 1])
    _h5(ann / "positive" / "5.h5", np.zeros((0, 2), np.int64))
    _h5(ann / "negative" / "5.h5", np.zeros((0,), np.int64))
    assert len(read_bcdata(tmp_path, "test", "5")) == 0


def test_bcdata_errors(tmp_path):
    ann = tmp_path / "annotations" / "test"
    _h5(ann / "positive" / "1.h5", [[1, 2]])
    with pytest.raises(AnnotationError, match=r"negative[/\\]1\.h5: annotation file not found"):
        read_bcdata(tmp_path, "test", 1)
    _h5(ann / "positive" / "2.h5", [[1, 2]], key="points")
    with pytest.raises(AnnotationError, match=r"no dataset 'coordinates' \(found \['points'\]\)"):
        read_bcdata(tmp_path, "test", 2)
    _h5(ann / "positive" / "3.h5", np.ones((2, 3)))
    with pytest.raises(AnnotationError, match=r"shape \(2, 3\)"):
        read_bcdata(tmp_path, "test", 3)
    (ann / "positive" / "6.h5").write_bytes(b"garbage")
    with pytest.raises(AnnotationError, match="not a readable HDF5 file"):
        read_bcdata(tmp_path, "test", 6)


# ---------------------------------------------------------------------------------------
# Arbitrary bytes: nothing but the project's own error type
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["shidc", "crchisto", "bcdata"])
def test_random_bytes_give_only_annotation_errors(tmp_path, kind):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(st.binary(max_size=1500))
    def check(data):
        if kind == "shidc":
            p = tmp_path / "x.json"
            p.write_bytes(data)
            call = lambda: read_shidc(p)  # noqa: E731
        elif kind == "crchisto":
            (tmp_path / "img1").mkdir(exist_ok=True)
            (tmp_path / "img1" / "img1_detection.mat").write_bytes(data)
            call = lambda: read_crchisto(tmp_path, "img1")  # noqa: E731
        else:
            for c in ("positive", "negative"):
                d = tmp_path / "annotations" / "test" / c
                d.mkdir(parents=True, exist_ok=True)
                (d / "0.h5").write_bytes(data)
            call = lambda: read_bcdata(tmp_path, "test", "0")  # noqa: E731
        with pytest.raises(AnnotationError):
            call()

    check()
