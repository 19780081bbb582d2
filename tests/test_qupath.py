"""QuPath interchange: the streaming detection writer, reading it back, region import."""

from __future__ import annotations

import gzip
import json
import uuid

import numpy as np
import pytest

from sparsecell.formats import qupath
from sparsecell.errors import AnnotationError
from sparsecell.formats.points import read_geojson
from sparsecell.formats.qupath import DetectionWriter, check_qupath_shape, qupath_class, read_detections, read_regions

CLASSES = ("positive", "negative", "stroma")


def _cells(n=50, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 5000, size=(n, 2))
    labels = rng.integers(0, len(CLASSES), size=n)
    scores = rng.uniform(0.3, 1.0, size=n)
    return xy, labels, scores


def _write(path, xy, labels, scores, id_key="slideA:model1", chunks=1, **kw):
    with DetectionWriter(path, CLASSES, id_key, **kw) as w:
        for part in np.array_split(np.arange(len(xy)), chunks):
            w.write(xy[part], labels[part], scores[part])
    assert w.count == len(xy)
    return path


def _load(path):
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def test_qupath_class_defaults_and_mapping():
    assert qupath_class("positive") == (["Tumor", "Positive"], (200, 50, 50))
    assert qupath_class("Negative") == (["Tumor", "Negative"], (90, 90, 180))
    parts, colour = qupath_class("stroma")
    assert parts == ["stroma"] and len(colour) == 3
    assert qupath_class("positive", {"positive": "Ki67: Positive"})[0] == ["Ki67", "Positive"]
    assert qupath_class(" Immune :  cells ")[0] == ["Immune", "cells"]


@pytest.mark.parametrize("suffix", [".geojson", ".geojson.gz"])
def test_round_trip_and_shape(tmp_path, suffix):
    xy, labels, scores = _cells()
    path = _write(tmp_path / f"cells{suffix}", xy, labels, scores)
    if suffix == ".geojson":
        assert b"\n  " not in path.read_bytes()  # compact, no indentation
    else:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    doc = _load(path)
    feats = doc["features"]
    assert len(feats) == len(xy)
    for f in feats:
        assert check_qupath_shape(f) == [], f
        assert "objectType" not in f
        uuid.UUID(f["id"])
    assert len({f["id"] for f in feats}) == len(feats)
    pos = feats[int(np.flatnonzero(labels == 0)[0])]["properties"]["classification"]
    assert pos == {"names": ["Tumor", "Positive"], "color": [200, 50, 50]}
    one = feats[int(np.flatnonzero(labels == 2)[0])]["properties"]["classification"]
    assert one["name"] == "stroma" and len(one["color"]) == 3

    back = read_detections(path)
    assert back.classes == ("Tumor: Positive", "Tumor: Negative", "stroma")
    np.testing.assert_allclose(back.xy, np.round(xy, 2), atol=1e-9)
    np.testing.assert_allclose(back.xy, xy, atol=0.005 + 1e-9)
    np.testing.assert_array_equal(back.labels, labels)
    np.testing.assert_array_equal(back.scores, scores)


def test_plain_output_reads_with_points_reader(tmp_path):
    xy, labels, scores = _cells(20)
    path = _write(tmp_path / "cells.geojson", xy, labels, scores)
    p = read_geojson(path)
    assert p.classes == ("Tumor: Positive", "Tumor: Negative", "stroma")
    np.testing.assert_array_equal(p.labels, labels)
    np.testing.assert_allclose(p.xy, np.round(xy, 2))


def test_fast_uuid5_matches_uuid_module():
    for name in ("s:m:1.00:2.00:0", "x" * 100, "é:ü"):
        assert qupath._uuid5(name) == str(uuid.uuid5(qupath.ID_NAMESPACE, name))


def test_ids_stable_and_slide_specific(tmp_path):
    xy, labels, scores = _cells(30)
    a1 = _load(_write(tmp_path / "a1.geojson", xy, labels, scores, id_key="slideA:m"))
    a2 = _load(_write(tmp_path / "a2.geojson", xy, labels, scores, id_key="slideA:m"))
    b = _load(_write(tmp_path / "b.geojson", xy, labels, scores, id_key="slideB:m"))
    ids = lambda d: [f["id"] for f in d["features"]]
    assert ids(a1) == ids(a2)
    assert not set(ids(a1)) & set(ids(b))


@pytest.mark.parametrize("suffix", [".geojson", ".geojson.gz"])
def test_streaming_chunks_give_same_file(tmp_path, suffix):
    xy, labels, scores = _cells(3000)  # several buffer flushes
    one = _write(tmp_path / f"one{suffix}", xy, labels, scores, chunks=1)
    three = _write(tmp_path / f"three{suffix}", xy, labels, scores, chunks=3)
    assert one.read_bytes() == three.read_bytes()


def test_annotation_feature(tmp_path):
    xy, labels, scores = _cells(10)
    path = tmp_path / "cells.geojson.gz"
    with DetectionWriter(path, CLASSES, "s:m") as w:
        w.write(xy, labels, scores)
        w.add_annotation([[0, 0], [5000, 0], [5000, 5000], [0, 5000]], name="tissue")
    feats = _load(path)["features"]
    ann = feats[-1]
    assert check_qupath_shape(ann) == []
    assert ann["properties"]["objectType"] == "annotation"
    assert ann["properties"]["classification"]["name"] == "Region*"
    ring = ann["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    assert len(read_detections(path)) == 10  # the annotation is not a detection
    (region,) = read_regions(path)
    assert region.name == "tissue" and region.area == 5000 * 5000


def test_partial_file_left_on_error(tmp_path):
    path = tmp_path / "cells.geojson"
    xy, labels, scores = _cells(5)
    with pytest.raises(RuntimeError), DetectionWriter(path, CLASSES, "s:m") as w:
        w.write(xy, labels, scores)
        raise RuntimeError("boom")
    assert path.exists() and w._fh.closed


def test_write_rejects_bad_input(tmp_path):
    with DetectionWriter(tmp_path / "x.geojson", CLASSES, "s:m") as w:
        with pytest.raises(ValueError):
            w.write([[1, 2]], [3], [0.5])
        with pytest.raises(ValueError):
            w.write([[np.nan, 2]], [0], [0.5])


def test_check_qupath_shape_finds_problems():
    bad = {
        "type": "Feature",
        "id": "detection_1",
        "objectType": "detection",
        "geometry": {"type": "Point", "coordinates": [1.0]},
        "properties": {"classification": {"name": "Tumor"}, "measurements": [{"name": "p", "value": 1}]},
    }
    problems = check_qupath_shape(bad)
    text = " | ".join(problems)
    for word in ("top level", "UUID", "objectType", "color", "measurements", "Point"):
        assert word in text, (word, problems)


# ---------------------------------------------------------------------------------------
# read_regions
# ---------------------------------------------------------------------------------------
def _feature(geom, name=None, cls=None, otype="annotation"):
    props = {"objectType": otype}
    if name:
        props["name"] = name
    if cls:
        props["classification"] = {"name": cls, "color": [0, 0, 180]}
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geom, "properties": props}


def _export():
    square = lambda x0, y0, s: [[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s], [x0, y0]]
    return {
        "type": "FeatureCollection",
        "features": [
            _feature({"type": "MultiPoint", "coordinates": [[1, 1], [2, 2]]}, cls="Tumor"),
            _feature({"type": "Polygon", "coordinates": [square(0, 0, 100), square(40, 40, 20)]}, name="holey"),
            _feature(
                {"type": "MultiPolygon", "coordinates": [[square(200, 0, 10)], [square(300, 0, 10)]]},
                cls="Region*",
            ),
            _feature({"type": "Polygon", "coordinates": [square(500, 500, 50)]}, name="rect", cls="Ignore*"),
            _feature({"type": "LineString", "coordinates": [[0, 0], [9, 9]]}),
        ],
    }


@pytest.mark.parametrize("suffix", [".geojson", ".json", ".geojson.gz"])
def test_read_regions(tmp_path, suffix):
    text = json.dumps(_export()).encode()
    path = tmp_path / f"export{suffix}"
    path.write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    regions = read_regions(path)
    assert len(regions) == 3
    holey, multi, rect = regions
    assert holey.name == "holey" and holey.classification is None
    assert multi.classification == "Region*" and rect.classification == "Ignore*"
    np.testing.assert_array_equal(
        holey.contains([[10, 10], [50, 50], [150, 50], [90, 45]]), [True, False, False, True]
    )
    np.testing.assert_array_equal(
        multi.contains([[205, 5], [305, 5], [250, 5], [205, 50]]), [True, True, False, False]
    )
    np.testing.assert_array_equal(rect.contains([[525, 525], [499, 525], [600, 600]]), [True, False, False])
    assert holey.bounds == (0, 0, 100, 100)
    assert holey.area == 100 * 100 - 20 * 20
    assert multi.area == 200 and rect.area == 2500


def test_read_regions_list_and_single_feature(tmp_path):
    feats = _export()["features"]
    (tmp_path / "list.geojson").write_text(json.dumps(feats))
    (tmp_path / "one.geojson").write_text(json.dumps(feats[1]))
    assert len(read_regions(tmp_path / "list.geojson")) == 3
    assert len(read_regions(tmp_path / "one.geojson")) == 1


def _assert_error(path, match):
    with pytest.raises(AnnotationError, match=match) as e:
        read_regions(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg


def test_read_regions_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    _assert_error(bad, "not valid JSON")

    nopoly = tmp_path / "nopoly.geojson"
    nopoly.write_text(json.dumps([_feature({"type": "MultiPoint", "coordinates": [[1, 1]]})]))
    _assert_error(nopoly, "no Polygon")

    two = tmp_path / "two.geojson"
    two.write_text(json.dumps([_feature({"type": "Polygon", "coordinates": [[[0, 0], [5, 5], [0, 0]]]})]))
    _assert_error(two, "fewer than 3")

    nan = tmp_path / "nan.geojson"
    nan.write_text(json.dumps([_feature({"type": "Polygon", "coordinates": [[[0, 0], [5, float("nan")], [0, 5], [0, 0]]]})]))
    _assert_error(nan, "NaN or infinite")

    big = tmp_path / "big.geojson"
    big.write_text(json.dumps(_export()))
    monkeypatch.setattr(qupath, "MAX_FILE_BYTES", 100)
    _assert_error(big, "limit")
    bigz = tmp_path / "big.geojson.gz"
    bigz.write_bytes(gzip.compress(b" " * 10_000 + json.dumps(_export()).encode()))
    assert bigz.stat().st_size < 2000
    monkeypatch.setattr(qupath, "MAX_FILE_BYTES", 2000)
    _assert_error(bigz, "decompresses")

    _assert_error(tmp_path / "missing.geojson", "not found")


def _legacy_export(tmp_path, version):
    """A QuPath 0.2 / 0.3 export: the object type in the feature's ``id``, a derived
    class as its last part with the parent nested in ``parentClass``."""
    def cls(*parts):
        c = None
        for p in parts:
            c = {"name": p, "colorRGB": -3670016, **({"parentClass": c} if c else {})}
        return c

    square = {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]}
    feats = [
        {"type": "Feature", "id": "PathAnnotationObject", "geometry": square,
         "properties": {"name": "r1", "classification": cls("Exhaustive"), "isLocked": False}},
        {"type": "Feature", "id": "PathAnnotationObject", "geometry": {"type": "MultiPoint", "coordinates": [[10, 10], [20, 20]]},
         "properties": {"classification": cls("Tumor", "Positive"), "isLocked": False}},
        {"type": "Feature", "id": "PathAnnotationObject", "geometry": {"type": "Point", "coordinates": [50, 50]},
         "properties": {"classification": cls("Stroma", "Positive"), "isLocked": False}},
        # a detection (its outline and its centre): never a region or a click
        {"type": "Feature", "id": "PathDetectionObject", "geometry": {"type": "Point", "coordinates": [70, 70]},
         "properties": {"classification": cls("Tumor", "Negative"), "measurements": []}},
        {"type": "Feature", "id": "PathCellObject", "geometry": square, "properties": {"measurements": []}},
    ]
    p = tmp_path / f"qupath_{version}.geojson"
    p.write_text(json.dumps(feats if version == "0.2" else {"type": "FeatureCollection", "features": feats}))
    return p


@pytest.mark.parametrize("version", ["0.2", "0.3"])
def test_qupath_02_and_03_exports_are_read_as_qupath_means_them(tmp_path, version):
    from sparsecell.formats.qupath import read_annotations

    p = _legacy_export(tmp_path, version)
    ann = read_annotations(p)
    assert [r.name for r in ann.regions] == ["r1"]  # the cell outline is not a region
    assert len(ann.xy) == 3  # the detection's point is not a click
    assert ann.names == ["Tumor: Positive", "Tumor: Positive", "Stroma: Positive"]  # parents kept, not merged
    dets = read_detections(p)
    assert len(dets) == 1 and dets.classes[dets.labels[0]] == "Tumor: Negative"


def test_a_spot_clicked_with_two_classes_is_one_warning(tmp_path):
    from sparsecell.formats.qupath import read_annotations

    square = {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]}
    feats = [_feature(square, name="r", cls="Exhaustive"),
             _feature({"type": "Point", "coordinates": [10, 10]}, cls="Tumor: Positive"),
             _feature({"type": "Point", "coordinates": [10.5, 10]}, cls="Tumor: Negative"),
             _feature({"type": "Point", "coordinates": [40, 40]}, cls="Tumor: Negative")]
    p = tmp_path / "a.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with pytest.warns(UserWarning, match=r"a.geojson: the spot \(10, 10\) is clicked as 'Tumor: Positive' and as 'Tumor: Negative'") as rec:
        ann = read_annotations(p)
    assert len(rec) == 1 and len(ann.xy) == 3


def test_a_bow_tie_or_flat_roi_is_refused_in_one_line(tmp_path):
    def write(ring):
        p = tmp_path / "roi.geojson"
        p.write_text(json.dumps({"type": "FeatureCollection", "features": [_feature({"type": "Polygon", "coordinates": [ring]}, name="r")]}))
        return p

    with pytest.raises(AnnotationError, match=r"roi.geojson: feature 0 \(annotation 'r'\): the polygon crosses itself"):
        read_regions(write([[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]))  # a bow-tie
    with pytest.raises(AnnotationError, match="encloses no area"):
        read_regions(write([[0, 0], [50, 50], [100, 100], [0, 0]]))
    ok = read_regions(write([[0, 0], [100, 0], [100, 100], [50, 40], [0, 100], [0, 0]]))  # concave, not crossing
    assert len(ok) == 1 and ok[0].area == pytest.approx(10000 - 0.5 * 100 * 60)
