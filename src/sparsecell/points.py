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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import AnnotationError
from .fileio import atomic_write_text

__all__ = [
    "Points",
    "check_file",
    "read_json",
    "finite_xy",
    "read_points",
    "read_csv",
    "read_geojson",
    "write_csv",
    "write_geojson",
    "CLASS_COLOURS",
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
    """The parsed JSON document of an annotation file (an AnnotationError naming it if absent or invalid)."""
    check_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: not valid JSON: {e}") from None


def finite_xy(xy: np.ndarray, path: Path) -> np.ndarray:
    """``xy`` if every coordinate is finite, else an AnnotationError naming ``path``."""
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnnotationError(f"{path}: {int(bad.sum())} points have NaN or infinite coordinates (first at index {i})")
    return xy


def _resolve_labels(raw: list, classes: Sequence[str] | None, path: Path, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Turn a list of labels (names, integers, or None for 'no label') into indices."""
    if all(r is None for r in raw):
        classes = tuple(classes) if classes else ("tumour",)
        if len(classes) != 1 and raw:
            raise AnnotationError(f"{path}: points carry no {where}, but {len(classes)} classes were asked for")
        return np.zeros(len(raw), np.int64), classes
    ints: list[int | None] = []
    for r in raw:
        if isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            ints.append(int(r))
        elif isinstance(r, str) and r.strip().lstrip("-").isdigit():
            ints.append(int(r.strip()))
        else:
            ints.append(None)
    if all(i is not None for i in ints):
        if classes is None:
            classes = tuple(f"class{i}" for i in range(max(ints) + 1)) if ints else ("tumour",)
        classes = tuple(classes)
        bad = [i for i in ints if not 0 <= i < len(classes)]
        if bad:
            raise AnnotationError(f"{path}: {where} {bad[0]} is not a class index 0..{len(classes) - 1} of {list(classes)}")
        return np.array(ints, np.int64), classes
    names = [None if r is None else str(r).strip() for r in raw]
    if any(n is None or n == "" for n in names):
        raise AnnotationError(f"{path}: some points have a {where} and others have none")
    if classes is None:
        classes = tuple(dict.fromkeys(sorted(names)))
    classes = tuple(classes)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise AnnotationError(f"{path}: {where} {unknown[0]!r} is not a known class {list(classes)}")
    return np.array([classes.index(n) for n in names], np.int64), classes


def read_csv(path: str | Path, classes: Sequence[str] | None = None) -> Points:
    """Read points from a CSV with a header ``x,y`` and optional ``label`` and ``score`` columns.

    ``label`` is a class name or an integer index into ``classes``. Without a label
    column (or with an empty one) every point is of the single class ``classes[0]``
    (default ``"tumour"``). A ``score`` column (as :func:`write_csv` writes for
    detections) becomes ``Points.scores``.
    """
    path = Path(path)
    check_file(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
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
    xy_arr = finite_xy(np.array(xy, np.float64).reshape(-1, 2), path)
    labels, classes = _resolve_labels(raw, classes, path, "label")
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


def read_geojson(path: str | Path, classes: Sequence[str] | None = None) -> Points:
    """Read points from QuPath GeoJSON (a FeatureCollection or a list of features).

    Point and MultiPoint geometries give their points; Polygon and MultiPolygon
    geometries (QuPath cell or nucleus outlines) give their centroid (area-weighted,
    of the outer ring; for a MultiPolygon, of its largest part). Other geometries are
    an error. The class is ``properties.classification.name``; a feature without one
    is of the single class (an error when several classes were asked for).
    """
    path = Path(path)
    doc = read_json(path)
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, list):
        features = doc
    else:
        raise AnnotationError(f"{path}: expected a GeoJSON FeatureCollection or a list of features")
    if not isinstance(features, list):
        raise AnnotationError(f"{path}: 'features' is not a list")
    xy: list[tuple[float, float]] = []
    raw: list = []
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
            raise AnnotationError(f"{path}: feature {i} has no geometry")
        geom = feat["geometry"]
        props = feat.get("properties") or {}
        cls_info = props.get("classification") if isinstance(props, dict) else None
        name = cls_info.get("name") if isinstance(cls_info, dict) else None
        gtype, coords = geom.get("type"), geom.get("coordinates")
        try:
            if gtype == "Point":
                pts = [(float(coords[0]), float(coords[1]))]
            elif gtype == "MultiPoint":
                pts = [(float(c[0]), float(c[1])) for c in coords]
            elif gtype == "Polygon":
                pts = [_polygon_centroid(np.asarray(coords[0], np.float64)[:, :2])]
            elif gtype == "MultiPolygon":
                rings = [np.asarray(poly[0], np.float64)[:, :2] for poly in coords]
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
        raw.extend([name] * len(pts))
    xy_arr = finite_xy(np.array(xy, np.float64).reshape(-1, 2), path)
    labels, classes = _resolve_labels(raw, classes, path, "classification name")
    return Points(xy_arr, labels, classes)


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
    """Write ``x,y,label[,score]`` with class names as labels."""
    import io

    path = Path(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    has_scores = points.scores is not None
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

    Each feature has ``properties.objectType = "detection"`` and a classification with
    the class name and colour (QuPath's ``[r, g, b]`` form).
    """
    import uuid

    path = Path(path)
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
                "id": str(uuid.UUID(int=i + 1)),
                "geometry": {"type": "Point", "coordinates": [float(points.xy[i, 0]), float(points.xy[i, 1])]},
                "properties": props,
            }
        )
    text = json.dumps({"type": "FeatureCollection", "features": feats}, indent=1)
    atomic_write_text(path, text)
    return path
