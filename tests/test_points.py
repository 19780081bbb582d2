"""Point readers, writers and the Points record, on small fixtures written here."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from sparsecell.errors import AnnotationError
from sparsecell.formats.points import Points, read_csv, read_geojson, read_points, write_csv, write_geojson


def _write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def _same(a: Points, b: Points, scores: bool = False) -> None:
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.classes == b.classes
    if scores:
        assert a.scores is not None and b.scores is not None
        np.testing.assert_array_equal(a.scores, b.scores)


# ---------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------
def test_csv_class_names(tmp_path):
    f = _write(tmp_path / "a.csv", "x,y,label\n1,2,tumour\n3.5,4,stroma\n5,6,tumour\n")
    p = read_csv(f)
    assert p.classes == ("stroma", "tumour")  # sorted when not given
    np.testing.assert_array_equal(p.xy, [[1, 2], [3.5, 4], [5, 6]])
    np.testing.assert_array_equal(p.labels, [1, 0, 1])
    assert p.scores is None
    q = read_csv(f, classes=("tumour", "stroma", "immune"))
    assert q.classes == ("tumour", "stroma", "immune")
    np.testing.assert_array_equal(q.labels, [0, 1, 0])


def test_csv_class_column_and_header_case(tmp_path):
    f = _write(tmp_path / "a.csv", "X, Y ,Class\n1,2,a\n")
    p = read_csv(f)
    assert p.classes == ("a",) and p.xy.tolist() == [[1, 2]]


def test_csv_integer_labels(tmp_path):
    f = _write(tmp_path / "a.csv", "x,y,label\n1,2,0\n3,4,1\n5,6,1\n")
    p = read_csv(f, classes=("pos", "neg"))
    np.testing.assert_array_equal(p.labels, [0, 1, 1])
    assert p.classes == ("pos", "neg")
    q = read_csv(f)
    assert q.classes == ("class0", "class1")
    with pytest.raises(AnnotationError, match=r"a\.csv.*label 1 is not a class index 0\.\.0"):
        read_csv(f, classes=("only",))


def test_csv_no_label_column(tmp_path):
    f = _write(tmp_path / "a.csv", "x,y\n1,2\n3,4\n")
    p = read_csv(f)
    assert p.classes == ("tumour",) and p.labels.tolist() == [0, 0]
    assert read_csv(f, classes=("cell",)).classes == ("cell",)
    with pytest.raises(AnnotationError, match="no label"):
        read_csv(f, classes=("a", "b"))


def test_csv_empty_label_column_is_no_label(tmp_path):
    f = _write(tmp_path / "a.csv", "x,y,label\n1,2,\n3,4,\n")
    assert read_csv(f).classes == ("tumour",)
    g = _write(tmp_path / "b.csv", "x,y,label\n1,2,a\n3,4,\n")
    with pytest.raises(AnnotationError, match="others have none"):
        read_csv(g)


def test_csv_header_only_is_empty(tmp_path):
    p = read_csv(_write(tmp_path / "a.csv", "x,y,label\n"), classes=("a", "b"))
    assert len(p) == 0 and p.classes == ("a", "b")


def test_csv_bom(tmp_path):
    f = _write(tmp_path / "bom.csv", "x,y,label\n7,8,tumour\n", encoding="utf-8-sig")
    assert f.read_bytes().startswith(b"\xef\xbb\xbf")
    p = read_csv(f)
    assert p.xy.tolist() == [[7, 8]] and p.classes == ("tumour",)


def test_csv_bad_number_names_file_and_line(tmp_path):
    f = _write(tmp_path / "bad.csv", "x,y\n1,2\n3,four\n")
    with pytest.raises(AnnotationError) as e:
        read_csv(f)
    msg = str(e.value)
    assert "bad.csv" in msg and "line 3" in msg and "four" in msg and "\n" not in msg


def test_csv_missing_value(tmp_path):
    f = _write(tmp_path / "short.csv", "x,y\n1\n")
    with pytest.raises(AnnotationError, match="line 2"):
        read_csv(f)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
def test_csv_non_finite(tmp_path, value):
    f = _write(tmp_path / "nan.csv", f"x,y\n1,2\n{value},3\n")
    with pytest.raises(AnnotationError, match=r"nan\.csv.*NaN or infinite.*index 1"):
        read_csv(f)


def test_csv_unknown_class(tmp_path):
    f = _write(tmp_path / "a.csv", "x,y,label\n1,2,tumour\n3,4,alien\n")
    with pytest.raises(AnnotationError, match=r"a\.csv.*'alien' is not a known class"):
        read_csv(f, classes=("tumour", "stroma"))


def test_csv_missing_columns_and_file(tmp_path):
    with pytest.raises(AnnotationError, match="'x' and 'y'"):
        read_csv(_write(tmp_path / "a.csv", "col,row\n1,2\n"))
    with pytest.raises(AnnotationError, match=r"nope\.csv: annotation file not found"):
        read_csv(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="not a file"):
        read_csv(tmp_path)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81\x90")
    with pytest.raises(AnnotationError, match="not a text CSV"):
        read_csv(tmp_path / "bin.csv")


def test_csv_scores_read(tmp_path):
    f = _write(tmp_path / "a.csv", "x,y,label,score\n1,2,t,0.25\n3,4,t,0.75\n")
    np.testing.assert_array_equal(read_csv(f).scores, [0.25, 0.75])
    with pytest.raises(AnnotationError, match="line 2.*score"):
        read_csv(_write(tmp_path / "b.csv", "x,y,score\n1,2,high\n"))


# ---------------------------------------------------------------------------------------
# GeoJSON
# ---------------------------------------------------------------------------------------
def _feature(geom_type, coords, name=None):
    props = {"objectType": "annotation"}
    if name is not None:
        props["classification"] = {"name": name, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": {"type": geom_type, "coordinates": coords}, "properties": props}


def _geojson(tmp_path, doc, name="a.geojson"):
    return _write(tmp_path / name, json.dumps(doc))


def test_geojson_feature_collection(tmp_path):
    doc = {
        "type": "FeatureCollection",
        "features": [_feature("Point", [1.5, 2.5], "tumour"), _feature("Point", [3, 4], "stroma")],
    }
    p = read_geojson(_geojson(tmp_path, doc))
    assert p.classes == ("stroma", "tumour")
    np.testing.assert_array_equal(p.xy, [[1.5, 2.5], [3, 4]])
    np.testing.assert_array_equal(p.labels, [1, 0])


def test_geojson_bare_list_and_single_feature(tmp_path):
    p = read_geojson(_geojson(tmp_path, [_feature("Point", [1, 2], "a"), _feature("Point", [3, 4], "a")]))
    assert p.xy.tolist() == [[1, 2], [3, 4]] and p.classes == ("a",)
    q = read_geojson(_geojson(tmp_path, _feature("Point", [5, 6, 0], "a"), "one.json"))  # z ignored
    assert q.xy.tolist() == [[5, 6]]


def test_geojson_multipoint(tmp_path):
    doc = [_feature("MultiPoint", [[1, 1], [2, 2], [3, 3]], "b"), _feature("Point", [9, 9], "a")]
    p = read_geojson(_geojson(tmp_path, doc))
    assert p.xy.tolist() == [[1, 1], [2, 2], [3, 3], [9, 9]]
    assert [p.classes[k] for k in p.labels] == ["b", "b", "b", "a"]


def test_geojson_polygon_centroids(tmp_path):
    square = [[[10, 20], [14, 20], [14, 24], [10, 24], [10, 20]]]  # centre (12, 22)
    triangle = [[[0, 0], [6, 0], [0, 3], [0, 0]]]  # centroid = vertex mean (2, 1)
    open_triangle = [[[0, 0], [0, 3], [6, 0]]]  # unclosed ring, clockwise: same centroid
    p = read_geojson(_geojson(tmp_path, [_feature("Polygon", square), _feature("Polygon", triangle), _feature("Polygon", open_triangle)]))
    np.testing.assert_allclose(p.xy, [[12, 22], [2, 1], [2, 1]], atol=1e-12)


def test_geojson_polygon_with_hole_uses_outer_ring(tmp_path):
    outer = [[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]
    hole = [[1, 1], [2, 1], [2, 2], [1, 2], [1, 1]]
    p = read_geojson(_geojson(tmp_path, [_feature("Polygon", [outer, hole])]))
    np.testing.assert_allclose(p.xy, [[2, 2]])


def test_geojson_multipolygon_largest_part(tmp_path):
    small = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]
    big = [[[10, 10], [16, 10], [16, 16], [10, 16], [10, 10]]]
    p = read_geojson(_geojson(tmp_path, [_feature("MultiPolygon", [small, big], "t")]))
    np.testing.assert_allclose(p.xy, [[13, 13]])


def test_geojson_linestring_is_error(tmp_path):
    f = _geojson(tmp_path, [_feature("LineString", [[0, 0], [1, 1]])], "line.geojson")
    with pytest.raises(AnnotationError, match=r"line\.geojson: feature 0 has a LineString geometry"):
        read_geojson(f)


def test_geojson_missing_classification(tmp_path):
    f = _geojson(tmp_path, [_feature("Point", [1, 2]), _feature("Point", [3, 4])])
    p = read_geojson(f)
    assert p.classes == ("tumour",) and p.labels.tolist() == [0, 0]
    assert read_geojson(f, classes=("nucleus",)).classes == ("nucleus",)
    with pytest.raises(AnnotationError, match="no classification name"):
        read_geojson(f, classes=("a", "b"))
    mixed = _geojson(tmp_path, [_feature("Point", [1, 2], "a"), _feature("Point", [3, 4])], "mixed.geojson")
    with pytest.raises(AnnotationError, match="others have none"):
        read_geojson(mixed)


def test_geojson_invalid(tmp_path):
    with pytest.raises(AnnotationError, match=r"broken\.geojson: not valid JSON"):
        read_geojson(_write(tmp_path / "broken.geojson", '{"type": "FeatureCollection", "features": ['))
    with pytest.raises(AnnotationError, match="expected a GeoJSON FeatureCollection"):
        read_geojson(_geojson(tmp_path, {"type": "Point", "coordinates": [1, 2]}, "b.geojson"))
    with pytest.raises(AnnotationError, match="feature 0 has no geometry"):
        read_geojson(_geojson(tmp_path, [{"type": "Feature", "properties": {}}], "c.geojson"))
    with pytest.raises(AnnotationError, match="feature 0: x 'a' is not a number"):
        read_geojson(_geojson(tmp_path, [_feature("Point", ["a"])], "d.geojson"))
    with pytest.raises(AnnotationError, match="NaN is not a JSON number"):
        read_geojson(_write(tmp_path / "e.geojson", '[{"type":"Feature","geometry":{"type":"Point","coordinates":[NaN,1]}}]'))
    with pytest.raises(AnnotationError, match="not a known class"):
        read_geojson(_geojson(tmp_path, [_feature("Point", [1, 2], "x")], "f.geojson"), classes=("a",))


def test_read_points_dispatch(tmp_path):
    assert len(read_points(_write(tmp_path / "a.csv", "x,y\n1,2\n"))) == 1
    assert len(read_points(_geojson(tmp_path, [_feature("Point", [1, 2])], "a.json"))) == 1
    with pytest.raises(AnnotationError, match=r"unknown annotation format '\.txt'"):
        read_points(_write(tmp_path / "a.txt", "1 2\n"))


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------
def _random_points(seed=0, n=50, classes=("tumour", "stroma", "immune"), scores=True):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1000, size=(n, 2))
    xy[0] = [0.1, 1 / 3]  # values whose decimal form is long
    labels = rng.integers(0, len(classes), n)
    labels[: len(classes)] = np.arange(len(classes))
    return Points(xy, labels, classes, rng.uniform(0, 1, n) if scores else None)


def test_csv_round_trip(tmp_path):
    p = _random_points()
    f = write_csv(p, tmp_path / "out" / "p.csv")
    _same(read_csv(f, classes=p.classes), p, scores=True)
    # without classes: the names come back in the file's order, the points and scores unchanged
    q = read_csv(f)
    assert q.classes == p.classes  # the file's own class list, in order
    _same(q.with_classes(p.classes), p)
    np.testing.assert_array_equal(q.scores, p.scores)
    # annotations (no scores) round-trip without a score column
    a = _random_points(1, scores=False)
    r = read_csv(write_csv(a, tmp_path / "a.csv"), classes=a.classes)
    _same(r, a)
    assert r.scores is None


def test_geojson_round_trip(tmp_path):
    p = _random_points(2)
    f = write_geojson(p, tmp_path / "p.geojson")
    _same(read_geojson(f, classes=p.classes), p)
    q = read_geojson(f)
    assert q.classes == p.classes
    _same(q.with_classes(p.classes), p)
    doc = json.loads(f.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(p)
    assert doc["features"][0]["properties"]["objectType"] == "detection"


def test_empty_round_trip(tmp_path):
    e = Points.empty(("a", "b"))
    _same(read_csv(write_csv(e, tmp_path / "e.csv"), classes=("a", "b")), e)
    _same(read_geojson(write_geojson(e, tmp_path / "e.geojson"), classes=("a", "b")), e)


def test_writers_leave_no_temporary_files(tmp_path):
    write_csv(_random_points(), tmp_path / "p.csv")
    write_geojson(_random_points(), tmp_path / "p.geojson")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.geojson"]


# ---------------------------------------------------------------------------------------
# check_inside and validation
# ---------------------------------------------------------------------------------------
def test_check_inside(tmp_path):
    p = Points.from_xy([[0, 0], [9.5, 4.9], [10, 2], [-0.01, 1]])
    assert p.inside(10, 5).tolist() == [True, True, False, False]
    with pytest.raises(AnnotationError) as e:
        p.check_inside(10, 5, source=tmp_path / "ann.csv")
    msg = str(e.value)
    assert "ann.csv" in msg and "2 of 4 points" in msg and "10x5" in msg and "x=10" in msg
    with pytest.warns(UserWarning, match=r"ann\.csv: dropped 2 of 4 points outside the 10x5 image"):
        q = p.check_inside(10, 5, source="ann.csv", drop=True)
    assert q.xy.tolist() == [[0, 0], [9.5, 4.9]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert p.subset([0, 1]).check_inside(10, 5, source="x", drop=True) is not None


def test_points_validation():
    with pytest.raises(ValueError, match="at least one class"):
        Points(np.zeros((0, 2)), np.zeros(0), ())
    with pytest.raises(ValueError, match="2 coordinates but 1 labels"):
        Points(np.zeros((2, 2)), [0], ("a",))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        Points(np.zeros((2, 2)), [0, 2], ("a", "b"))
    with pytest.raises(ValueError, match=r"labels must lie"):
        Points(np.zeros((1, 2)), [-1], ("a", "b"))
    with pytest.raises(ValueError, match="1 coordinates are NaN or infinite"):
        Points([[np.nan, 1], [2, 3]], [0, 0])
    with pytest.raises(ValueError, match="2 coordinates but 3 scores"):
        Points(np.zeros((2, 2)), [0, 0], ("a",), [1, 2, 3])
    with pytest.raises(ValueError, match="not among"):
        Points.from_xy([[1, 1]], ("a", "b"), label=1).with_classes(("a", "c"))
    with pytest.raises(ValueError, match="classes differ"):
        Points.concat([Points.empty(("a",)), Points.empty(("b",))])
    with pytest.raises(ValueError, match="at least one part"):
        Points.concat([])


def test_points_views():
    p = Points([[1, 2], [3, 4], [5, 6]], [0, 1, 1], ("a", "b"), [0.1, 0.2, 0.3])
    assert p.num_classes == 2 and len(p) == 3
    assert p.counts() == {"a": 1, "b": 2}
    assert p.of_class(1).xy.tolist() == [[3, 4], [5, 6]]
    np.testing.assert_array_equal(p.of_class(1).scores, [0.2, 0.3])
    r = p.with_classes(("b", "c", "a"))
    assert r.labels.tolist() == [2, 0, 0] and r.classes == ("b", "c", "a")
    assert p.translate(1, -1).xy.tolist() == [[2, 1], [4, 3], [6, 5]]
    c = Points.concat([p, p])
    assert len(c) == 6 and c.scores is not None
    assert Points.concat([p, Points.from_xy([[0, 0]], ("a", "b"))]).scores is None


def test_clicks_csv_with_a_spot_of_two_classes_warns_once_and_keeps_both(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("x,y,label\n10,10,positive\n10.4,10,negative\n50,50,negative\n")
    with pytest.warns(UserWarning, match=r"c.csv: the spot \(10, 10\) is clicked as 'positive' and as 'negative'") as rec:
        pts = read_csv(p)
    assert len(rec) == 1 and len(pts.xy) == 3
