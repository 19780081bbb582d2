"""Points through every writer and reader (property-based; our readers read back
exactly what our writers wrote), and fuzzing of ``read_points`` with arbitrary bytes and
with structured near-misses: nothing but the project's own error type may come out."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sparsecell.errors import AnnotationError, SparsecellError
from sparsecell.formats.points import (
    Points,
    read_csv,
    read_geojson,
    read_points,
    write_csv,
    write_geojson,
)

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

WRITERS = {"csv": (write_csv, read_csv, ".csv"), "geojson": (write_geojson, read_geojson, ".geojson")}


# ---------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------
# class names: letters (any script), inner spaces and colons, e.g. "Tumor: Positive";
# no leading/trailing blanks (see test_class_names_with_outer_spaces below)
_name_chars = st.one_of(st.characters(categories=("Lu", "Ll")), st.sampled_from(" :"))
class_name = st.text(_name_chars, min_size=1, max_size=16).filter(lambda s: s == s.strip() and s != "")
class_tuples = st.lists(class_name, min_size=1, max_size=4, unique=True).map(tuple)
coord = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False, allow_infinity=False)


@st.composite
def points(draw, with_scores=None, classes=class_tuples, min_size=0):
    cls = draw(classes)
    rows = draw(st.lists(st.tuples(coord, coord), min_size=min_size, max_size=15))
    if rows and draw(st.booleans()):  # repeats: the same coordinates again (any class)
        rows += draw(st.lists(st.sampled_from(rows), min_size=1, max_size=5))
    n = len(rows)
    labels = draw(st.lists(st.integers(0, len(cls) - 1), min_size=n, max_size=n))
    if with_scores is None:
        with_scores = draw(st.booleans())
    scores = None
    if with_scores:
        scores = draw(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=n, max_size=n))
    return Points(np.array(rows, np.float64).reshape(-1, 2), np.array(labels, np.int64), cls, scores)


def names(p: Points) -> list[str]:
    return [p.classes[k] for k in p.labels]


# ---------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------
@SETTINGS
@given(points(), st.sampled_from(sorted(WRITERS)))
def test_round_trip_with_classes(pts, fmt):
    """Points (bit-exact: the writers use repr / JSON floats), labels, classes and scores
    come back; a GeoJSON file named .json reads alike through read_points."""
    write, read, suffix = WRITERS[fmt]
    with tempfile.TemporaryDirectory() as d:
        path = write(pts, Path(d) / f"p{suffix}")
        backs = [read(path, pts.classes)]
        if fmt == "geojson":
            (Path(d) / "p.json").write_bytes(path.read_bytes())
            backs.append(read_points(Path(d) / "p.json", pts.classes))
    for back in backs:
        np.testing.assert_array_equal(back.xy, pts.xy)
        np.testing.assert_array_equal(back.labels, pts.labels)
        assert back.classes == pts.classes
        if pts.scores is None:
            assert back.scores is None
        else:
            np.testing.assert_array_equal(back.scores, pts.scores)


@SETTINGS
@given(points(min_size=1), st.sampled_from(sorted(WRITERS)))
def test_round_trip_without_classes_keeps_each_points_class_name(pts, fmt):
    """Without ``classes`` our own files give back their classes in order, and each point keeps its name."""
    write, read, suffix = WRITERS[fmt]
    with tempfile.TemporaryDirectory() as d:
        back = read(write(pts, Path(d) / f"p{suffix}"))
    np.testing.assert_array_equal(back.xy, pts.xy)
    assert names(back) == names(pts)
    assert back.classes == pts.classes


@SETTINGS
@given(points(), st.sampled_from(sorted(WRITERS)))
def test_round_trip_through_read_points_with_tmp_path(tmp_path, pts, fmt):
    write, _, suffix = WRITERS[fmt]
    d = Path(tempfile.mkdtemp(dir=tmp_path))  # tmp_path is shared by all examples: one folder each
    path = write(pts, d / f"p{suffix}")
    back = read_points(path, pts.classes)
    np.testing.assert_array_equal(back.xy, pts.xy)
    np.testing.assert_array_equal(back.labels, pts.labels)
    assert [p.name for p in d.iterdir()] == [f"p{suffix}"]  # atomic writes leave no temporaries


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_empty_round_trip_with_classes(tmp_path, fmt):
    write, read, suffix = WRITERS[fmt]
    pts = Points.empty(("positive", "negative"))
    back = read(write(pts, tmp_path / f"e{suffix}"), pts.classes)
    assert len(back) == 0 and back.classes == pts.classes and back.xy.shape == (0, 2)


def test_csv_round_trip_integer_like_names_in_index_order(tmp_path):
    """Names "0", "1" in that order survive."""
    pts = Points([[1.5, 2.0], [3.0, 4.0], [5.0, 6.0]], [0, 1, 1], ("0", "1"))
    back = read_csv(write_csv(pts, tmp_path / "p.csv"), pts.classes)
    np.testing.assert_array_equal(back.labels, pts.labels)


# ---------------------------------------------------------------------------------------
# what used to break (issue 10): our readers read back exactly what our writers wrote
# ---------------------------------------------------------------------------------------
def test_geojson_keeps_scores(tmp_path):
    pts = Points([[1.0, 2.0], [3.5, 4.25]], [0, 1], ("positive", "negative"), [0.9, 0.125])
    back = read_geojson(write_geojson(pts, tmp_path / "p.geojson"), pts.classes)
    assert back.scores is not None
    np.testing.assert_array_equal(back.scores, pts.scores)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_read_without_classes_keeps_class_order(tmp_path, fmt):
    write, read, suffix = WRITERS[fmt]
    pts = Points([[1.0, 2.0], [3.0, 4.0]], [0, 1], ("b", "a"))
    back = read(write(pts, tmp_path / f"p{suffix}"))
    assert back.classes == ("b", "a")
    np.testing.assert_array_equal(back.labels, pts.labels)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_empty_prediction_read_without_classes_keeps_classes(tmp_path, fmt):
    write, read, suffix = WRITERS[fmt]
    pts = Points(np.zeros((0, 2)), np.zeros(0, np.int64), ("positive", "negative"), np.zeros(0))
    back = read(write(pts, tmp_path / f"e{suffix}"))
    assert back.classes == ("positive", "negative")


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_integer_like_class_names_round_trip(tmp_path, fmt):
    write, read, suffix = WRITERS[fmt]
    pts = Points([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [0, 0, 1], ("1", "0"))
    back = read(write(pts, tmp_path / f"p{suffix}"), pts.classes)
    assert names(back) == names(pts)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_integer_like_class_names_without_classes(tmp_path, fmt):
    write, read, suffix = WRITERS[fmt]
    pts = Points([[1.0, 2.0], [3.0, 4.0]], [0, 1], ("0", "1"))
    back = read(write(pts, tmp_path / f"p{suffix}"))
    assert names(back) == names(pts)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_class_names_with_outer_spaces(tmp_path, fmt):
    write, read, suffix = WRITERS[fmt]
    pts = Points([[1.0, 2.0], [3.0, 4.0]], [0, 1], (" a", "b "))
    back = read(write(pts, tmp_path / f"p{suffix}"), pts.classes)
    assert names(back) == names(pts)


# ---------------------------------------------------------------------------------------
# fuzzing: read_points raises only SparsecellError
# ---------------------------------------------------------------------------------------
def _read_or_error(path: Path):
    try:
        out = read_points(path)
    except SparsecellError:
        return None
    assert isinstance(out, Points)
    return out


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from([".csv", ".geojson", ".json"]))
@example(b"", ".csv")
@example(b"", ".json")
@example(b"\xef\xbb\xbfx,y\n1,2\n", ".csv")
@example(b"x,y\n1,\x00\n", ".csv")
@example(b"\xff\xfe", ".geojson")
@example(b"null", ".json")
def test_read_points_random_bytes_raise_only_sparsecell_errors(data, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"f{suffix}"
        path.write_bytes(data)
        _read_or_error(path)


# Structured fuzzing reaches deeper than random bytes.
_cell = st.one_of(
    st.text(st.sampled_from("0123456789-+.eE naif,\"x²٣"), max_size=8),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-3, 3).map(str),
    st.sampled_from(["positive", "negative", "tumour", "", " "]),
)


@st.composite
def csv_texts(draw):
    cols = draw(st.lists(st.sampled_from(["x", "y", " X ", "label", "class", "score", "z", ""]), max_size=5))
    cols = draw(st.sampled_from([["x", "y"], ["x", "y", "label"], ["x", "y", "label", "score"]])) + cols
    rows = draw(st.lists(st.lists(_cell, min_size=0, max_size=len(cols) + 1), max_size=6))
    lines = [",".join(cols)] + [",".join(r) for r in rows]
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                       st.sampled_from(["Point", "MultiPoint", "Polygon", "MultiPolygon", "Feature",
                                        "FeatureCollection", "LineString", "positive", "0", "-1", ""]))  # fmt: skip
_json_any = st.recursive(_json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.sampled_from(["type", "features", "geometry", "coordinates", "properties", "classification", "name"]),
    kids, max_size=4), max_leaves=25)  # fmt: skip


@st.composite
def geojson_docs(draw):
    coords = st.one_of(_json_any, st.lists(st.floats(allow_nan=False), max_size=3),
                       st.lists(st.lists(st.lists(st.floats(-1e3, 1e3), max_size=3), max_size=5), max_size=2))  # fmt: skip
    geometry = st.fixed_dictionaries({"type": st.sampled_from(["Point", "MultiPoint", "Polygon", "MultiPolygon",
                                                               "LineString"]) | _json_any, "coordinates": coords})  # fmt: skip
    props = st.one_of(_json_any, st.fixed_dictionaries({"classification": st.one_of(
        _json_any, st.fixed_dictionaries({"name": _json_any}))}))  # fmt: skip
    feature = st.one_of(_json_any, st.fixed_dictionaries({"type": st.just("Feature"), "geometry": geometry,
                                                          "properties": props}))  # fmt: skip
    features = st.lists(feature, max_size=4)
    doc = draw(st.one_of(features, st.fixed_dictionaries({"type": st.just("FeatureCollection"), "features": features}),
                         feature, _json_any))  # fmt: skip
    return json.dumps(doc)


@settings(max_examples=100, deadline=None)
@given(st.one_of(csv_texts().map(lambda t: (t, ".csv")), geojson_docs().map(lambda t: (t, ".geojson"))))
def test_read_points_structured_fuzz_raises_only_sparsecell_errors(case):
    text, suffix = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"f{suffix}"
        path.write_text(text, encoding="utf-8")
        _read_or_error(path)


@pytest.mark.parametrize("name, text", [
    ("a.csv", "x,y,label\n1,2,--1\n"),
    ("b.csv", "x,y,label\n1,2,\u00b2\n"),
    ("c.geojson", json.dumps([{"geometry": {"type": "Point", "coordinates": [1, 2]},
                               "properties": {"classification": {"name": "--3"}}}])),
])  # fmt: skip
def test_labels_that_are_no_integer_are_names(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    back = read_points(path)
    assert back.classes == (json.loads(text)[0]["properties"]["classification"]["name"] if name.endswith("json")
                            else text.splitlines()[1].split(",")[2],)  # fmt: skip


@pytest.mark.parametrize("geometry", [
    '{"type": "Point", "coordinates": [1' + "0" * 400 + ', 1]}',
    '{"type": "Polygon", "coordinates": [[[0, 0], [1' + "0" * 400 + ', 0], [0, 1]]]}',
])  # fmt: skip
def test_huge_integer_coordinate_is_annotation_error(tmp_path, geometry):
    path = tmp_path / "big.geojson"
    path.write_text('{"type": "Feature", "geometry": ' + geometry + "}", encoding="utf-8")
    with pytest.raises(AnnotationError):
        read_points(path)


def test_deeply_nested_json_is_annotation_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 2000, encoding="utf-8")
    with pytest.raises(AnnotationError):
        read_points(path)


def test_geojson_ids_are_unique_across_the_images_of_a_run(tmp_path):
    import json

    pts = Points(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0, 0]), ("tumour",))
    ids = []
    for name in ("a.geojson", "b.geojson"):
        write_geojson(pts, tmp_path / name)
        ids += [f["id"] for f in json.loads((tmp_path / name).read_text())["features"]]
    assert len(set(ids)) == 4
    write_geojson(pts, tmp_path / "a.geojson")  # a rerun writes the same ids
    assert [f["id"] for f in json.loads((tmp_path / "a.geojson").read_text())["features"]] == ids[:2]
