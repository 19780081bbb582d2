"""Point annotations: the record for one image's points, and the generic readers and
writers (CSV and QuPath GeoJSON); each data set's own format is read in its module of
:mod:`sparsecell.datasets`.

Every coordinate in sparsecell is (x, y) = (column, row), 0-based, in pixels of the
image as stored. Readers convert from their format's convention (CRCHisto's .mat
files are 1-based); writers write that convention (CSV) or QuPath's (GeoJSON, whose
pixel coordinates are also (x, y) from the top-left corner).

Classes are integers ``0 .. C-1`` indexing ``Points.classes``; in heatmaps class ``c``
is channel ``c + 1`` and channel 0 is background.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import AnnotationError
from .fileio import atomic_write_text

__all__ = [
    "Points",
    "check_file",
    "read_json",
    "number",
    "finite_xy",
    "read_points",
    "read_csv",
    "read_geojson",
    "write_csv",
    "write_geojson",
    "CLASS_COLOURS",
    "classification_name",
    "warn_two_classes",
    "SAME_SPOT_PX",
]


@dataclass(frozen=True, eq=False)
class Points:
    """The annotated (or detected) points of one image.

    Parameters
    ----------
    xy : array (N, 2) of float
        (x, y) = (column, row), 0-based pixel coordinates.
    labels : array (N,) of int
        Class index of each point, in ``0 .. len(classes) - 1``.
    classes : tuple of str
        Class names.
    scores : array (N,) of float, optional
        Detection confidence (the heatmap value at the peak); None for annotations.

    Examples
    --------
    >>> p = Points.from_xy([[3.0, 4.0], [10.5, 2.0]], classes=("tumour",))
    >>> len(p), p.classes
    (2, ('tumour',))
    """

    xy: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = ("tumour",)
    scores: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        classes = tuple(str(c) for c in self.classes)
        if len(classes) == 0:
            raise ValueError("Points: classes must name at least one class")
        if len(labels) != len(xy):
            raise ValueError(f"Points: {len(xy)} coordinates but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(
                f"Points: labels must lie in 0..{len(classes) - 1} for classes {classes}, "
                f"got {labels.min()}..{labels.max()}"
            )
        if not np.all(np.isfinite(xy)):
            raise ValueError(f"Points: {int((~np.isfinite(xy)).any(1).sum())} coordinates are NaN or infinite")
        scores = None
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if len(scores) != len(xy):
                raise ValueError(f"Points: {len(xy)} coordinates but {len(scores)} scores")
        object.__setattr__(self, "xy", xy)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "scores", scores)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def empty(cls, classes: Sequence[str] = ("tumour",)) -> "Points":
        return cls(np.zeros((0, 2)), np.zeros(0, np.int64), tuple(classes))

    @classmethod
    def from_xy(cls, xy, classes: Sequence[str] = ("tumour",), label: int = 0) -> "Points":
        """All points of one class."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return cls(xy, np.full(len(xy), label, np.int64), tuple(classes))

    @classmethod
    def concat(cls, parts: Iterable["Points"]) -> "Points":
        parts = list(parts)
        if not parts:
            raise ValueError("Points.concat needs at least one part")
        classes = parts[0].classes
        for p in parts[1:]:
            if p.classes != classes:
                raise ValueError(f"Points.concat: classes differ: {classes} vs {p.classes}")
        scores = None
        if all(p.scores is not None for p in parts):
            scores = np.concatenate([p.scores for p in parts])
        return cls(
            np.concatenate([p.xy for p in parts]),
            np.concatenate([p.labels for p in parts]),
            classes,
            scores,
        )

    # -- views --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.xy)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index) -> "Points":
        """The points selected by a boolean mask or an index array."""
        return Points(
            self.xy[index],
            self.labels[index],
            self.classes,
            None if self.scores is None else self.scores[index],
        )

    def above(self, threshold: float) -> "Points":
        """The scored points whose score is strictly above ``threshold``. For peaks found
        at a lower threshold this equals finding them at ``threshold`` (a peak is only
        suppressed by stronger ones), so a threshold sweep needs one peak search."""
        if self.scores is None:
            raise ValueError("Points.above: these points have no scores")
        return self.subset(self.scores > threshold)

    def of_class(self, c: int) -> "Points":
        return self.subset(self.labels == c)

    def counts(self) -> dict[str, int]:
        """Number of points per class name."""
        n = np.bincount(self.labels, minlength=self.num_classes)
        return {name: int(k) for name, k in zip(self.classes, n)}

    def with_classes(self, classes: Sequence[str]) -> "Points":
        """Relabel onto another class list (by name); every present class must be in it."""
        classes = tuple(classes)
        missing = sorted({self.classes[i] for i in np.unique(self.labels)} - set(classes))
        if missing:
            raise ValueError(f"classes {missing} are not among {list(classes)}")
        lut = np.array([classes.index(c) if c in classes else -1 for c in self.classes], np.int64)
        return Points(self.xy, lut[self.labels], classes, self.scores)

    def translate(self, dx: float, dy: float) -> "Points":
        return Points(self.xy + np.array([dx, dy]), self.labels, self.classes, self.scores)

    def inside(self, width: int, height: int) -> np.ndarray:
        """Boolean mask of the points inside an image of that size (0 <= x < W, 0 <= y < H)."""
        x, y = self.xy[:, 0], self.xy[:, 1]
        return (x >= 0) & (x < width) & (y >= 0) & (y < height)

    def check_inside(self, width: int, height: int, source: str | Path, drop: bool = False) -> "Points":
        """Raise (or, with ``drop``, warn and drop) when points fall outside the image."""
        inside = self.inside(width, height)
        n_out = int((~inside).sum())
        if n_out == 0:
            return self
        if not drop:
            i = int(np.flatnonzero(~inside)[0])
            x, y = self.xy[i]
            raise AnnotationError(
                f"{source}: {n_out} of {len(self)} points lie outside the {width}x{height} image "
                f"(first: x={x:g}, y={y:g}); are x and y swapped or the coordinates 1-based?"
            )
        import warnings

        warnings.warn(f"{source}: dropped {n_out} of {len(self)} points outside the {width}x{height} image")
        return self.subset(inside)


# ---------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------
def check_file(path: Path) -> None:
    """An AnnotationError unless ``path`` is an existing file."""
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found")
    if not path.is_file():
        raise AnnotationError(f"{path}: not a file")


def read_json(path: Path):
    """The parsed JSON document of an annotation file (an AnnotationError naming it if
    absent, unreadable or invalid; NaN and Infinity are not JSON and are refused)."""
    check_file(path)

    def no_constant(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise AnnotationError(f"{path}: not valid JSON: {e}") from None
    except RecursionError:
        raise AnnotationError(f"{path}: not valid JSON: nested too deeply") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror or e})") from None


def _declared_classes(text: str, path: Path) -> tuple[str, ...]:
    try:
        names = json.loads(text)
    except (ValueError, RecursionError):
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise AnnotationError(f"{path}: the class list it declares is not a JSON list of distinct names: {text.strip()[:80]!r}")
    return tuple(names)


def number(v, path: Path, what: str) -> float:
    """A JSON number as a finite float (booleans, strings and huge integers refused)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise AnnotationError(f"{path}: {what} {v!r} is not a number")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise AnnotationError(f"{path}: {what} is not a finite number")
    return f


def finite_xy(xy: np.ndarray, path: Path) -> np.ndarray:
    """``xy`` if every coordinate is finite, else an AnnotationError naming ``path``."""
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnnotationError(f"{path}: {int(bad.sum())} points have NaN or infinite coordinates (first at index {i})")
    return xy


_INT = re.compile(r"[+-]?[0-9]+")


def _resolve_labels(raw: list, classes: Sequence[str] | None, path: Path, where: str,
                    declared: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:  # fmt: skip
    """Turn a list of labels (names, integers, or None for 'no label') into indices.

    The class list is the caller's ``classes``, else the one the file ``declared`` (our
    writers store it), else inferred (names sorted, or ``class0 ..`` for indices). With
    a known class list, labels that are all class names are names, even when they look
    like numbers; otherwise integer labels index the class list.
    """
    known = tuple(classes) if classes is not None else (tuple(declared) if declared is not None else None)
    if all(r is None for r in raw):
        known = known or ("tumour",)
        if len(known) != 1 and raw:
            raise AnnotationError(f"{path}: points carry no {where}, but {len(known)} classes were asked for")
        return np.zeros(len(raw), np.int64), known
    names = [None if r is None else str(r).strip() for r in raw]
    if any(n is None or n == "" for n in names):
        raise AnnotationError(f"{path}: some points have a {where} and others have none")
    by_name = {c.strip(): i for i, c in enumerate(known)} if known is not None else None
    if by_name is not None and all(n in by_name for n in names):
        return np.array([by_name[n] for n in names], np.int64), known
    if all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) or isinstance(r, str) and _INT.fullmatch(r.strip())
           for r in raw):  # fmt: skip
        ints = [int(r) for r in raw]
        if known is None:
            top = max(ints)
            if top >= 10_000:
                raise AnnotationError(f"{path}: {where} {top} is not a plausible class index")
            known = tuple(f"class{i}" for i in range(top + 1))
        bad = [i for i in ints if not 0 <= i < len(known)]
        if bad:
            raise AnnotationError(f"{path}: {where} {bad[0]} is not a class index 0..{len(known) - 1} of {list(known)}")
        return np.array(ints, np.int64), known
    if known is None:
        known = tuple(dict.fromkeys(sorted(names)))
        by_name = {c: i for i, c in enumerate(known)}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise AnnotationError(f"{path}: {where} {unknown[0]!r} is not a known class {list(known)}")
    return np.array([by_name[n] for n in names], np.int64), known


#: The comment line our CSV writer puts first, naming the classes in order.
CSV_CLASSES_PREFIX = "# classes: "


def read_csv(path: str | Path, classes: Sequence[str] | None = None) -> Points:
    """Read points from a CSV with a header ``x,y`` and optional ``label`` and ``score`` columns.

    ``label`` is a class name or an integer index into ``classes``. Without a label
    column (or with an empty one) every point is of the single class ``classes[0]``
    (default ``"tumour"``). A ``score`` column (as :func:`write_csv` writes for
    detections) becomes ``Points.scores``. A first line ``# classes: [...]`` (a JSON
    list, as :func:`write_csv` writes) gives the class names in order.
    """
    path = Path(path)
    check_file(path)
    declared = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
            if first.startswith(CSV_CLASSES_PREFIX):
                declared = _declared_classes(first[len(CSV_CLASSES_PREFIX):], path)
            else:
                fh.seek(0)
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "x" not in header or "y" not in header:
                raise AnnotationError(f"{path}: CSV header must contain 'x' and 'y' columns, found {reader.fieldnames}")
            keys = {h.strip().lower(): h for h in reader.fieldnames}
            label_key = keys.get("label") or keys.get("class")
            score_key = keys.get("score")
            xy, raw, scores = [], [], []
            for lineno, row in enumerate(reader, start=2):
                try:
                    xy.append((float(row[keys["x"]]), float(row[keys["y"]])))
                except (TypeError, ValueError):
                    raise AnnotationError(
                        f"{path}: line {lineno}: x={row.get(keys['x'])!r}, y={row.get(keys['y'])!r} are not numbers"
                    ) from None
                label = row.get(label_key) if label_key else None
                raw.append(None if label is None or not str(label).strip() else label)
                if score_key:
                    try:
                        scores.append(float(row[score_key]))
                    except (TypeError, ValueError):
                        raise AnnotationError(f"{path}: line {lineno}: score={row.get(score_key)!r} is not a number") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not a text CSV file") from None
    except csv.Error as e:
        raise AnnotationError(f"{path}: malformed CSV: {e}") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror or e})") from None
    xy_arr = finite_xy(np.array(xy, np.float64).reshape(-1, 2), path)
    labels, classes = _resolve_labels(raw, classes, path, "label", declared)
    if not score_key:  # clicks, not detections
        warn_two_classes(path, xy_arr, [classes[k] for k in labels.tolist()])
    return Points(xy_arr, labels, classes, np.array(scores, np.float64) if score_key else None)


def _polygon_centroid(ring: np.ndarray) -> tuple[float, float]:
    x, y = ring[:, 0], ring[:, 1]
    a = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = a.sum() / 2.0
    if abs(area) < 1e-12:
        return float(x.mean()), float(y.mean())
    cx = ((x + np.roll(x, -1)) * a).sum() / (6 * area)
    cy = ((y + np.roll(y, -1)) * a).sum() / (6 * area)
    return float(cx), float(cy)


#: The FeatureCollection member in which our GeoJSON writer names the classes in order
#: (a foreign member, RFC 7946 section 6.1: other readers, QuPath among them, ignore it).
GEOJSON_CLASSES_KEY = "sparsecell_classes"


#: Deepest ``parentClass`` chain read (a hostile file's nesting is bounded).
MAX_CLASS_DEPTH = 16


def _split_class(name: str) -> list[str]:
    return [p.strip() for p in name.split(":")]


def classification_name(c, split: bool = True) -> str | None:
    """A QuPath classification as one name, its parts joined ``"A: B"`` (None when absent).

    Read as QuPath's ``PathClassTypeAdapter.read`` does (``GsonTools.java``):

    * a string: ``PathClass.fromString`` (split on ':', parts stripped);
    * an object with ``colorRGB`` or ``parentClass`` (QuPath 0.2 and 0.3, Gson's
      default form): ``name`` is the last part only and the parent is nested, so
      ``Tumor: Positive`` is ``{"name": "Positive", "parentClass": {"name": "Tumor"}}``
      (``PathClass.toString`` joins the chain with ": ");
    * otherwise (QuPath 0.4 and later) ``name`` when present, else the parts ``names``.

    ``split=False`` keeps a 0.4 ``name`` as written (our own writer's class names may
    hold a ':'; the file's ``sparsecell_classes`` list names them exactly).
    """
    if isinstance(c, str):
        return ": ".join(_split_class(c)) if c.strip() else None
    if not isinstance(c, dict):
        return None
    if "colorRGB" in c or "parentClass" in c:
        parts: list[str] = []
        for _ in range(MAX_CLASS_DEPTH):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                break
            parts[:0] = _split_class(c["name"])
            c = c.get("parentClass")
        return ": ".join(parts) if parts else None
    if isinstance(c.get("name"), str):
        return ": ".join(_split_class(c["name"])) if split else c["name"]
    names = c.get("names")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return ": ".join(n.strip() for n in names)
    return None


def _class_name(props) -> str | None:
    """The feature's QuPath classification name (see :func:`classification_name`)."""
    return classification_name(props.get("classification") if isinstance(props, dict) else None, split=False)


#: Two clicks at most this far apart (px) mark the same spot: a cell's centre is
#: clicked to within a pixel or two, and two different cells' centres are several px
#: apart even where nuclei touch.
SAME_SPOT_PX = 1.0


def warn_two_classes(path, xy: np.ndarray, names: Sequence) -> None:
    """One warning when some spot (clicks within :data:`SAME_SPOT_PX`) is clicked with
    two classes (a slip of the class menu, or a cell the annotator changed their mind
    about); the clicks are kept. ``names`` is each click's class (None: unclassified)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2 or len(set(names)) < 2:
        return
    import warnings

    from scipy.spatial import cKDTree

    pairs = sorted((i, j) for i, j in cKDTree(xy).query_pairs(SAME_SPOT_PX) if names[i] != names[j])
    if pairs:
        i, j = pairs[0]
        more = f" (and {len(pairs) - 1} more such spots)" if len(pairs) > 1 else ""
        warnings.warn(f"{path}: the spot ({xy[i, 0]:g}, {xy[i, 1]:g}) is clicked as {names[i] or 'Unclassified'!r} and as "
                      f"{names[j] or 'Unclassified'!r} (within {SAME_SPOT_PX:g} px){more}; both clicks are kept", stacklevel=3)  # fmt: skip


def _score(props, path: Path, i: int) -> float | None:
    """The ``score`` measurement (QuPath's map form, or its list of name/value pairs)."""
    m = props.get("measurements") if isinstance(props, dict) else None
    if isinstance(m, dict):
        v = m.get("score")
    elif isinstance(m, list):
        v = next((e.get("value") for e in m if isinstance(e, dict) and e.get("name") == "score"), None)
    else:
        v = None
    return None if v is None else number(v, path, f"feature {i}: score")


def _ring(coords, path: Path, i: int) -> np.ndarray:
    """A polygon ring as (n, 2) float, every coordinate a finite number."""
    if not isinstance(coords, list) or not coords:
        raise AnnotationError(f"{path}: feature {i}: a polygon ring must be a non-empty list of [x, y]")
    return np.array([[number(c[0], path, f"feature {i}: x"), number(c[1], path, f"feature {i}: y")] for c in coords], np.float64)


def geojson_features(doc, path: Path) -> list:
    """The top-level features of a parsed GeoJSON document: a FeatureCollection, a list
    of features, or one feature (else an AnnotationError naming ``path``)."""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, list):
        features = doc
    else:
        raise AnnotationError(f"{path}: expected a GeoJSON FeatureCollection, a list of features or a feature")
    if not isinstance(features, list):
        raise AnnotationError(f"{path}: 'features' is not a list")
    return features


def read_geojson(path: str | Path, classes: Sequence[str] | None = None) -> Points:
    """Read points from QuPath GeoJSON (a FeatureCollection or a list of features).

    Point and MultiPoint geometries give their points; Polygon and MultiPolygon
    geometries (QuPath cell or nucleus outlines) give their centroid (area-weighted,
    of the outer ring; for a MultiPolygon, of its largest part). Other geometries are
    an error. The class is ``properties.classification`` read as QuPath reads it
    (:func:`classification_name`: 0.4's ``name`` / ``names``, 0.2 / 0.3's ``name``
    with its ``parentClass`` chain); a
    feature without one is of the single class (an error when several classes were
    asked for). A ``score`` measurement on every feature (as :func:`write_geojson`
    writes) becomes ``Points.scores``; the collection's ``sparsecell_classes`` member
    gives the class names in order.
    """
    path = Path(path)
    doc = read_json(path)
    declared = None
    features = geojson_features(doc, path)
    if isinstance(doc, dict) and GEOJSON_CLASSES_KEY in doc:
        declared = _declared_classes(json.dumps(doc[GEOJSON_CLASSES_KEY]), path)
    xy: list[tuple[float, float]] = []
    raw: list = []
    scores: list = []
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
            raise AnnotationError(f"{path}: feature {i} has no geometry")
        geom = feat["geometry"]
        props = feat.get("properties") or {}
        gtype, coords = geom.get("type"), geom.get("coordinates")
        try:
            if gtype == "Point":
                pts = [(number(coords[0], path, f"feature {i}: x"), number(coords[1], path, f"feature {i}: y"))]
            elif gtype == "MultiPoint":
                pts = [tuple(r) for r in _ring(coords, path, i)]
            elif gtype == "Polygon":
                pts = [_polygon_centroid(_ring(coords[0], path, i))]
            elif gtype == "MultiPolygon":
                rings = [_ring(poly[0], path, i) for poly in coords]
                areas = [abs(_shoelace(r)) for r in rings]
                pts = [_polygon_centroid(rings[int(np.argmax(areas))])]
            else:
                raise AnnotationError(
                    f"{path}: feature {i} has a {gtype} geometry; only Point, MultiPoint, Polygon and MultiPolygon are read"
                )
        except AnnotationError:
            raise
        except (TypeError, ValueError, IndexError, KeyError):
            raise AnnotationError(f"{path}: feature {i}: malformed {gtype} coordinates") from None
        xy.extend(pts)
        raw.extend([_class_name(props)] * len(pts))
        scores.extend([_score(props, path, i)] * len(pts))
    xy_arr = finite_xy(np.array(xy, np.float64).reshape(-1, 2), path)
    labels, classes = _resolve_labels(raw, classes, path, "classification name", declared)
    has_scores = bool(scores) and all(v is not None for v in scores)
    if not has_scores:  # clicks, not detections
        warn_two_classes(path, xy_arr, [classes[k] for k in labels.tolist()])
    return Points(xy_arr, labels, classes, np.array(scores, np.float64) if has_scores else None)


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum() / 2.0)


def read_points(path: str | Path, classes: Sequence[str] | None = None) -> Points:
    """Read a CSV (``.csv``) or QuPath GeoJSON (``.geojson`` / ``.json``) point file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, classes)
    if suffix in (".geojson", ".json"):
        return read_geojson(path, classes)
    raise AnnotationError(f"{path}: unknown annotation format {suffix!r}; use .csv or .geojson")


# ---------------------------------------------------------------------------------------
# Writers (atomic: a temporary file renamed into place, so no half-written output)
# ---------------------------------------------------------------------------------------
CLASS_COLOURS = [
    (200, 60, 40),  # red-brown
    (40, 90, 200),  # blue
    (40, 170, 70),  # green
    (220, 160, 20),  # amber
    (150, 60, 180),  # purple
    (20, 170, 170),  # teal
]


def write_csv(points: Points, path: str | Path) -> Path:
    """Write ``x,y,label[,score]`` with class names as labels, after a first line
    ``# classes: [...]`` naming the classes in order (pandas: ``read_csv(path, comment="#")``)."""
    import io

    path = Path(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    has_scores = points.scores is not None
    buf.write(CSV_CLASSES_PREFIX + json.dumps(list(points.classes)) + "\n")
    w.writerow(["x", "y", "label"] + (["score"] if has_scores else []))
    for i in range(len(points)):
        row = [repr(float(points.xy[i, 0])), repr(float(points.xy[i, 1])), points.classes[points.labels[i]]]
        if has_scores:
            row.append(repr(float(points.scores[i])))
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())
    return path


def write_geojson(points: Points, path: str | Path) -> Path:
    """Write a QuPath-importable FeatureCollection of Point detections.

    Each feature has ``properties.objectType = "detection"``, a classification with
    the class name and colour (QuPath's ``[r, g, b]`` form) and an id unique across the
    images of a run: a UUID from the file's name and the point's index (stable, so a
    rerun writes the same ids; distinct, since a run's images have distinct names).
    """
    import uuid

    path = Path(path)
    base = f"sparsecell:image:{path.name}:"
    feats = []
    for i in range(len(points)):
        c = int(points.labels[i])
        rgb = CLASS_COLOURS[c % len(CLASS_COLOURS)]
        props = {
            "objectType": "detection",
            "classification": {"name": points.classes[c], "color": list(rgb)},
            "isLocked": False,
        }
        if points.scores is not None:
            props["measurements"] = {"score": float(points.scores[i])}
        feats.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base}{i}")),
                "geometry": {"type": "Point", "coordinates": [float(points.xy[i, 0]), float(points.xy[i, 1])]},
                "properties": props,
            }
        )
    doc = {"type": "FeatureCollection", GEOJSON_CLASSES_KEY: list(points.classes), "features": feats}
    text = json.dumps(doc, indent=1, allow_nan=False)
    atomic_write_text(path, text)
    return path
