"""QuPath interchange: detections out (a streaming GeoJSON writer), regions in.

What QuPath's importer needs (``PathObjectTypeAdapter.parseObject``; see
``runs/issue12_memo.md`` section A1) and this module therefore writes:

* ``properties.objectType = "detection"`` (a top-level ``objectType`` is never read
  and the object silently becomes an annotation);
* ``properties.classification`` as ``{"name": ..., "color": [r, g, b]}`` for a
  one-part class or ``{"names": [...], "color": [r, g, b]}`` for a derived one
  (without ``color`` QuPath refuses the whole file);
* ``properties.measurements`` as a map of numbers;
* ``id`` a UUID (anything else is dropped); ours are ``uuid5`` of the slide and model
  identity and the cell, so a rerun gives the same ids and two slides never share one.

QuPath's "Positive %" counts a class only when its last part is exactly ``Positive``
or ``Negative``, so our lower-case ``positive`` / ``negative`` are written as
``Tumor: Positive`` / ``Tumor: Negative`` by default. ``.geojson.gz`` is gzip
compressed (QuPath >= 0.4 reads it).

Coordinates are level-0 pixels, (x, y) from the top-left corner, as everywhere in
sparsecell.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import re
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import AnnotationError
from .points import CLASS_COLOURS, GEOJSON_CLASSES_KEY, Points, check_file, classification_name, warn_two_classes

__all__ = [
    "DEFAULT_CLASS_MAP",
    "POSITIVE_COLOUR",
    "NEGATIVE_COLOUR",
    "ID_NAMESPACE",
    "MAX_FILE_BYTES",
    "qupath_class",
    "classification",
    "DetectionWriter",
    "Region",
    "read_regions",
    "read_detections",
    "check_qupath_shape",
]

#: QuPath's default colours for its ``Positive`` and ``Negative`` classes.
POSITIVE_COLOUR = (200, 50, 50)
NEGATIVE_COLOUR = (90, 90, 180)
#: Colour of the ``Region*`` class (QuPath's built-in region class).
REGION_COLOUR = (0, 0, 180)

#: sparsecell class name (lower case) -> QuPath class name, used unless overridden.
DEFAULT_CLASS_MAP: dict[str, str] = {"positive": "Tumor: Positive", "negative": "Tumor: Negative"}

#: Namespace of our detection ids (fixed: changing it changes every id we write).
ID_NAMESPACE = uuid.UUID("6f1c2b9e-5a47-4c1e-9d3b-2f8e7a61c0d4")

#: Largest annotation file (compressed size, and decompressed size for ``.gz``) that we
#: read: JSON parsing costs many times the file size in memory.
MAX_FILE_BYTES = 200 * 1024 * 1024

_DETECTION_TYPES = {"detection", "pathdetectionobject", "cell", "pathcellobject", "tile", "pathtileobject"}


# ---------------------------------------------------------------------------------------
# Classes
# ---------------------------------------------------------------------------------------
def _parts(name: str) -> list[str]:
    """QuPath's ``PathClass.fromString``: split on ':' and strip each part."""
    parts = [p.strip() for p in str(name).split(":")]
    if not all(parts):
        raise ValueError(f"class name {name!r} has an empty part")
    return parts


def _colour_for(parts: Sequence[str], index: int | None) -> tuple[int, int, int]:
    last = parts[-1]
    if last == "Positive":
        return POSITIVE_COLOUR
    if last == "Negative":
        return NEGATIVE_COLOUR
    if ": ".join(parts) == "Region*":
        return REGION_COLOUR
    if index is None:  # stable across runs (unlike hash())
        index = zlib.crc32(": ".join(parts).encode("utf-8"))
    return tuple(int(v) for v in CLASS_COLOURS[index % len(CLASS_COLOURS)])


def qupath_class(
    name: str, mapping: Mapping[str, str] | None = None, *, index: int | None = None
) -> tuple[list[str], tuple[int, int, int]]:
    """The QuPath class (its parts) and colour for a sparsecell class name.

    ``mapping`` (sparsecell name -> QuPath name such as ``"Tumor: Positive"``)
    overrides :data:`DEFAULT_CLASS_MAP`; keys match exactly, else case-insensitively.
    Other names are kept (split on ':' and stripped, as QuPath does). Classes whose
    last part is ``Positive`` / ``Negative`` get QuPath's colours; others a colour from
    ``CLASS_COLOURS`` (by ``index`` when given, else by a stable hash of the name).

    >>> qupath_class("positive")
    (['Tumor', 'Positive'], (200, 50, 50))
    >>> qupath_class("tumour", index=0)
    (['tumour'], (200, 60, 40))
    """
    name = str(name)
    target = None
    for table in (mapping or {}, DEFAULT_CLASS_MAP):
        if name in table:
            target = table[name]
        else:
            low = {str(k).strip().lower(): v for k, v in table.items()}
            target = low.get(name.strip().lower())
        if target is not None:
            break
    parts = _parts(target if target is not None else name)
    return parts, _colour_for(parts, index)


def classification(parts: Sequence[str], colour: Sequence[int]) -> dict:
    """QuPath's classification object: ``name`` for one part, ``names`` for several."""
    parts = list(parts)
    key = {"name": parts[0]} if len(parts) == 1 else {"names": parts}
    return {**key, "color": [int(c) for c in colour]}


# ---------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------
def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(ID_NAMESPACE, name))``, about three times faster."""
    b = bytearray(hashlib.sha1(_NS_BYTES + name.encode("utf-8")).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NS_BYTES = ID_NAMESPACE.bytes


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


class DetectionWriter:
    """Stream detections into a QuPath GeoJSON FeatureCollection (gzip for ``.gz``).

    Parameters
    ----------
    path : output file; written in place (the caller writes into a staging folder).
    classes : sparsecell class names; ``labels`` index them.
    id_key : identity of slide and model (e.g. ``"<slide sha>:<model sha>"``), part of
        every id: ids are stable across reruns and differ between slides.
    mapping : class-name overrides for :func:`qupath_class`.
    score_name : name of the measurement holding each detection's score.

    Use as a context manager; call :meth:`write` once per chunk of cells. On a normal
    exit the collection is closed; after an exception the partial file is left (closed)
    for the caller to delete.
    """

    def __init__(
        self,
        path: str | Path,
        classes: Sequence[str],
        id_key: str,
        mapping: Mapping[str, str] | None = None,
        score_name: str = "Detection probability",
    ):
        self.path = Path(path)
        self.classes = tuple(str(c) for c in classes)
        if not self.classes:
            raise ValueError("DetectionWriter: classes must name at least one class")
        self.id_key = str(id_key)
        self.score_name = str(score_name)
        self.qupath_names: list[str] = []
        self._class_json: list[str] = []
        for i, c in enumerate(self.classes):
            parts, colour = qupath_class(c, mapping, index=i)
            self.qupath_names.append(": ".join(parts))
            self._class_json.append(_dumps(classification(parts, colour)))
        self._score_key = _dumps(self.score_name)
        self.count = 0
        self._n_features = 0
        self._fh = None
        self._closed = False

    # -- context manager --------------------------------------------------------------
    def open(self) -> "DetectionWriter":
        if self._fh is not None or self._closed:
            raise RuntimeError(f"{self.path}: DetectionWriter already opened")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(self.path, "wb")
        try:
            if self.path.suffix.lower() == ".gz":
                # mtime=0 and no file name: the same cells give the same bytes.
                binary = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
            else:
                binary = raw
            self._raw = raw
            self._fh = io.TextIOWrapper(binary, encoding="utf-8", newline="\n", write_through=False)
        except BaseException:
            raw.close()
            raise
        declared = list(dict.fromkeys(self.qupath_names))
        self._fh.write('{"type":"FeatureCollection",' + _dumps(GEOJSON_CLASSES_KEY) + ":" + _dumps(declared) + ',"features":[')
        return self

    def __enter__(self) -> "DetectionWriter":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)

    def close(self, complete: bool = True) -> None:
        """Finish the collection (unless ``complete`` is False) and close the file."""
        if self._fh is None or self._closed:
            return
        self._closed = True
        try:
            if complete:
                self._fh.write("\n]}\n")
            self._fh.close()  # closes the gzip stream (writing its trailer) and the file
        finally:
            if not self._raw.closed:
                self._raw.close()

    # -- writing ----------------------------------------------------------------------
    def _features(self, texts: list[str]) -> None:
        if self._fh is None or self._closed:
            raise RuntimeError(f"{self.path}: DetectionWriter is not open (use it in a with block)")
        if texts:
            self._fh.write(("\n" if self._n_features == 0 else ",\n") + ",\n".join(texts))
            self._n_features += len(texts)

    def write(self, xy, labels, scores) -> int:
        """Append cells: ``xy`` (N, 2) level-0 px, ``labels`` (N,) class indices,
        ``scores`` (N,). Returns N."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(labels).reshape(-1)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        n = len(xy)
        if len(labels) != n or len(scores) != n:
            raise ValueError(f"{self.path}: {n} coordinates, {len(labels)} labels and {len(scores)} scores")
        if n == 0:
            return 0
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{self.path}: labels must be integers, got {labels.dtype}")
        labels = labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= len(self.classes):
            raise ValueError(f"{self.path}: labels must lie in 0..{len(self.classes) - 1}, got {labels.min()}..{labels.max()}")
        if not np.isfinite(xy).all():
            raise ValueError(f"{self.path}: {int((~np.isfinite(xy)).any(1).sum())} coordinates are NaN or infinite")
        if not np.isfinite(scores).all():
            raise ValueError(f"{self.path}: {int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
        xr = np.round(xy, 2)
        key = self.id_key
        out = []
        for (x, y), c, p in zip(xr.tolist(), labels.tolist(), scores.tolist(), strict=True):
            x, y = x + 0.0, y + 0.0  # no "-0.0"
            fid = _uuid5(f"{key}:{x:.2f}:{y:.2f}:{c}")
            out.append(
                f'{{"type":"Feature","id":"{fid}","geometry":{{"type":"Point","coordinates":[{x!r},{y!r}]}},'
                f'"properties":{{"objectType":"detection","classification":{self._class_json[c]},'
                f'"measurements":{{{self._score_key}:{p!r}}}}}}}'
            )
        self._features(out)
        self.count += n
        return n

    def add_annotation(self, polygon_xy, name: str, class_name: str | None = "Region*") -> None:
        """Write one annotation (a closed Polygon) so that selecting it in QuPath shows
        the detections' "Tumor: Positive %" inside it."""
        ring = np.asarray(polygon_xy, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(ring).all():
            raise ValueError(f"{self.path}: annotation {name!r} has NaN or infinite coordinates")
        ring = np.round(ring, 2)
        if len(ring) > 1 and (ring[0] == ring[-1]).all():
            ring = ring[:-1]
        if len(np.unique(ring, axis=0)) < 3:
            raise ValueError(f"{self.path}: annotation {name!r} needs at least 3 distinct points")
        coords = [[x + 0.0, y + 0.0] for x, y in ring.tolist()]
        coords.append(coords[0])
        props: dict = {"objectType": "annotation", "name": str(name)}
        if class_name is not None:
            parts = _parts(class_name)
            props["classification"] = classification(parts, _colour_for(parts, None))
        digest = f"{self.id_key}:annotation:{name}:{_dumps(coords)}"
        feat = {
            "type": "Feature",
            "id": str(uuid.uuid5(ID_NAMESPACE, digest)),
            "geometry": {"type": "Polygon", "coordinates": [coords]},
            "properties": props,
        }
        self._features([_dumps(feat)])


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
def _load(path: Path):
    """The parsed JSON of a (possibly gzipped) GeoJSON file, with a size limit."""
    check_file(path)
    limit = MAX_FILE_BYTES
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise AnnotationError(f"{path}: {size} bytes, more than the {limit}-byte limit for annotation files")
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                    data = gz.read(limit + 1)
                if len(data) > limit:
                    raise AnnotationError(f"{path}: decompresses to more than the {limit}-byte limit for annotation files")
            else:
                data = fh.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise AnnotationError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        text = data.decode("utf-8-sig")
        return json.loads(text)  # NaN / Infinity parse to floats; coordinates are checked later
    except (ValueError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: not valid JSON: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except RecursionError:
        raise AnnotationError(f"{path}: not valid JSON: nested too deeply") from None


def _features(doc, path: Path) -> list:
    """The features of a FeatureCollection, a list of features or one feature,
    including nested ``childObjects`` / ``children`` (QuPath hierarchy exports)."""
    from .points import geojson_features

    top = geojson_features(doc, path)
    out, stack = [], list(reversed(top))
    while stack:
        f = stack.pop()
        if not isinstance(f, dict):
            continue
        out.append(f)
        props = f.get("properties")
        kids = f.get("childObjects") or f.get("children")
        if kids is None and isinstance(props, dict):
            kids = props.get("childObjects") or props.get("children")
        if isinstance(kids, list):
            stack.extend(reversed(kids))
    return out


def _class_of(props) -> str | None:
    """The classification as one name ('A: B'), read as QuPath reads it: a string,
    ``name`` / ``names`` (QuPath 0.4 and later), or ``name`` with its ``parentClass``
    chain (0.2 and 0.3); see :func:`~sparsecell.formats.points.classification_name`."""
    return classification_name(props.get("classification") if isinstance(props, dict) else None)


#: QuPath 0.2 names the object type in the feature's ``id`` (the Java class's simple
#: name; ``LEGACY_TYPE_IDS`` in QuPath's ``QuPathTypeAdapters.java``); 0.3 writes
#: ``properties.object_type``, 0.4 and later ``properties.objectType`` and a UUID ``id``.
#: A type in the properties wins over the ``id``, as in QuPath.
_LEGACY_TYPES = {"PathDetectionObject": "detection", "PathCellObject": "cell", "PathTileObject": "tile",
                 "PathAnnotationObject": "annotation", "TMACoreObject": "tmaCore", "PathRootObject": "root"}  # fmt: skip


def _object_type(feat: dict) -> str | None:
    """``properties.objectType`` (QuPath 0.4 and later), or the 0.2 / 0.3 ``id`` form."""
    props = feat.get("properties")
    if isinstance(props, dict):
        for key in ("objectType", "object_type", "type"):
            if isinstance(props.get(key), str):
                return props[key]
    legacy = feat.get("id")
    return _LEGACY_TYPES.get(legacy) if isinstance(legacy, str) else None


def _ring_array(coords, path: Path, where) -> np.ndarray:
    """A ring as (n, 2) float without the closing point: at least 3 distinct vertices,
    no two edges crossing (a bow-tie) and some area. ``where`` names the feature in
    errors (an index, or a text such as ``"feature 3 (annotation 'tumour')"``)."""
    where = f"feature {where}" if isinstance(where, int) else str(where)
    try:
        a = np.asarray(coords)
    except (ValueError, TypeError):
        a = None
    if a is None or a.ndim != 2 or a.shape[1] < 2 or a.dtype.kind not in "iuf":
        raise AnnotationError(f"{path}: {where}: a polygon ring must be a list of [x, y] numbers")
    a = a[:, :2].astype(np.float64)
    if not np.isfinite(a).all():
        raise AnnotationError(f"{path}: {where}: polygon has NaN or infinite coordinates")
    if len(a) > 1 and (a[0] == a[-1]).all():
        a = a[:-1]
    if len(a) < 3 or len(np.unique(a, axis=0)) < 3:
        raise AnnotationError(f"{path}: {where}: a polygon ring has fewer than 3 points")
    k = _self_crossing(a)
    if k is not None:
        raise AnnotationError(f"{path}: {where}: the polygon crosses itself (edge {k[0]} crosses edge {k[1]}, "
                              f"e.g. a bow-tie); redraw it in QuPath")  # fmt: skip
    span = float((a.max(0) - a.min(0)).max())
    if abs(_shoelace(a)) <= _FLAT_AREA * span * span:  # relative: float noise of collinear points is no area
        raise AnnotationError(f"{path}: {where}: a polygon ring encloses no area (its points lie on a line)")
    return a


#: A ring whose area is at most this fraction of its bounding square's is flat.
_FLAT_AREA = 1e-9


#: Rings with more vertices are checked for area only (the crossing test is quadratic).
MAX_CROSSING_CHECK = 20_000


def _self_crossing(ring: np.ndarray) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges of a closed ring that cross properly, or None."""
    n = len(ring)
    if n < 4 or n > MAX_CROSSING_CHECK:
        return None
    p, q = ring, np.roll(ring, -1, axis=0)  # edge e runs p[e] -> q[e]

    def cross(o, a, b):
        return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])

    for e in range(n - 2):
        js = np.arange(e + 2, n - (1 if e == 0 else 0))  # the closing edge is adjacent to edge 0
        if not len(js):
            continue
        d1, d2 = cross(p[e], q[e], p[js]), cross(p[e], q[e], q[js])
        d3, d4 = cross(p[js], q[js], p[e][None]), cross(p[js], q[js], q[e][None])
        hit = np.flatnonzero((d1 * d2 < 0) & (d3 * d4 < 0))
        if len(hit):
            return e, int(js[hit[0]])
    return None


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum() / 2.0)


@dataclass(frozen=True, eq=False)
class Region:
    """A region annotation: ``polygons`` is a list of polygons, each a list of rings
    (exterior first, then holes), each ring an (N, 2) float array of (x, y) without
    the closing point."""

    name: str | None
    classification: str | None
    polygons: list[list[np.ndarray]]

    def contains(self, xy) -> np.ndarray:
        """Boolean (N,): inside some polygon's exterior and not in one of its holes
        (points exactly on an edge may fall either way)."""
        from matplotlib.path import Path as MplPath

        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        result = np.zeros(len(xy), bool)
        if len(xy) == 0:
            return result
        for rings in self.polygons:
            ext = rings[0]
            lo, hi = ext.min(0), ext.max(0)
            cand = np.flatnonzero(((xy >= lo) & (xy <= hi)).all(1) & ~result)
            if len(cand) == 0:
                continue
            pts = xy[cand]
            inside = MplPath(ext).contains_points(pts)
            for hole in rings[1:]:
                if inside.any():
                    inside &= ~MplPath(hole).contains_points(pts)
            result[cand[inside]] = True
        return result

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the exteriors."""
        allp = np.concatenate([rings[0] for rings in self.polygons])
        (x0, y0), (x1, y1) = allp.min(0), allp.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def area(self) -> float:
        """Area in px² (exteriors minus holes)."""
        return float(sum(abs(_shoelace(r[0])) - sum(abs(_shoelace(h)) for h in r[1:]) for r in self.polygons))


def read_regions(path: str | Path) -> list[Region]:
    """The Polygon / MultiPolygon annotations of a QuPath GeoJSON export (``.geojson``,
    ``.json``, or gzipped ``.gz``), any classification. Point, MultiPoint and line
    features are skipped, and so are detection and cell objects (cell outlines).
    Every problem is an AnnotationError naming the file."""
    path = Path(path)
    feats = _features(_load(path), path)
    regions: list[Region] = []
    skipped_detections = 0
    for i, f in enumerate(feats):
        geom = f.get("geometry")
        if not isinstance(geom, dict) or geom.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        otype = _object_type(f)
        if otype is not None and otype.strip().lower() in _DETECTION_TYPES:
            skipped_detections += 1
            continue
        coords = geom.get("coordinates")
        polys = [coords] if geom["type"] == "Polygon" else coords
        if not isinstance(polys, list) or not polys:
            raise AnnotationError(f"{path}: feature {i}: malformed {geom['type']} coordinates")
        props = f.get("properties") if isinstance(f.get("properties"), dict) else {}
        name = props.get("name")
        where = f"feature {i}" + (f" (annotation {name!r})" if isinstance(name, str) and name else "")
        polygons = []
        for poly in polys:
            if not isinstance(poly, list) or not poly:
                raise AnnotationError(f"{path}: {where}: malformed {geom['type']} coordinates")
            polygons.append([_ring_array(r, path, where) for r in poly])
        regions.append(Region(name if isinstance(name, str) else None, _class_of(props), polygons))
    if not regions:
        extra = f" ({skipped_detections} detection outlines skipped)" if skipped_detections else ""
        raise AnnotationError(f"{path}: no Polygon or MultiPolygon annotations found{extra}")
    return regions


def read_detections(path: str | Path, score_name: str = "Detection probability") -> Points:
    """Read detections (``objectType`` detection or cell, Point geometry) back from a
    (possibly gzipped) GeoJSON such as :class:`DetectionWriter` writes.

    Class names are QuPath's, joined 'A: B'; the classes are the file's
    ``sparsecell_classes`` list when present, else the sorted names found (a detection
    without a class is ``Unclassified``). Scores are the ``score_name`` measurement
    when every detection has one, else None. Annotations are skipped."""
    path = Path(path)
    doc = _load(path)
    feats = _features(doc, path)
    declared = None
    if isinstance(doc, dict) and isinstance(doc.get(GEOJSON_CLASSES_KEY), list):
        declared = [str(c) for c in doc[GEOJSON_CLASSES_KEY]]
    xy, names, scores = [], [], []
    for i, f in enumerate(feats):
        otype = _object_type(f)
        geom = f.get("geometry")
        if otype is None or otype.strip().lower() not in _DETECTION_TYPES - {"tile", "pathtileobject"}:
            continue
        if not isinstance(geom, dict) or geom.get("type") != "Point":
            continue
        c = geom.get("coordinates")
        if not (isinstance(c, list) and len(c) >= 2 and all(_is_number(v) for v in c[:2])):
            raise AnnotationError(f"{path}: feature {i}: Point coordinates are not two finite numbers")
        xy.append((float(c[0]), float(c[1])))
        props = f.get("properties")
        names.append(_class_of(props) or "Unclassified")
        m = props.get("measurements") if isinstance(props, dict) else None
        if isinstance(m, list):  # QuPath 0.2 / 0.3: [{"name": ..., "value": ...}, ...]
            v = next((e.get("value") for e in m if isinstance(e, dict) and e.get("name") == score_name), None)
        else:
            v = m.get(score_name) if isinstance(m, dict) else None
        scores.append(float(v) if _is_number(v) else None)
    classes = list(declared) if declared else []
    for n in sorted(set(names) - set(classes)):
        classes.append(n)
    if not classes:
        classes = ["Unclassified"]
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], np.int64)
    has_scores = bool(scores) and all(s is not None for s in scores)
    return Points(
        np.array(xy, np.float64).reshape(-1, 2), labels, tuple(classes), np.array(scores, np.float64) if has_scores else None
    )


# ---------------------------------------------------------------------------------------
# Shape check
# ---------------------------------------------------------------------------------------
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_qupath_shape(feature: dict) -> list[str]:
    """Problems that would make QuPath import ``feature`` other than as we mean it
    (empty when fine). Anything but an annotation is checked as a detection: a Point
    geometry and a measurements map; annotations need a Polygon with closed rings (or,
    for points, a MultiPoint of finite pairs)."""
    if not isinstance(feature, dict):
        return ["feature is not an object"]
    problems = []
    if feature.get("type") != "Feature":
        problems.append(f"type is {feature.get('type')!r}, not 'Feature'")
    if "objectType" in feature:
        problems.append("objectType at the top level (QuPath reads it only inside properties)")
    fid = feature.get("id")
    if not (isinstance(fid, str) and _UUID.fullmatch(fid)):
        problems.append(f"id {fid!r} is not a UUID")
    props = feature.get("properties")
    if not isinstance(props, dict):
        return problems + ["properties missing"]
    otype = props.get("objectType")
    if otype not in ("detection", "cell", "annotation"):
        problems.append(f"properties.objectType is {otype!r}, not detection, cell or annotation")
    cls = props.get("classification")
    if cls is not None:
        if not isinstance(cls, dict):
            problems.append("classification is not an object")
        else:
            name_ok = isinstance(cls.get("name"), str) and cls["name"].strip() != ""
            names = cls.get("names")
            names_ok = isinstance(names, list) and bool(names) and all(isinstance(n, str) and n.strip() for n in names)
            if not (name_ok or names_ok):
                problems.append("classification has no name or names")
            col = cls.get("color")
            if not (
                isinstance(col, list)
                and len(col) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in col)
            ):
                problems.append(f"classification color {col!r} is not 3 integers 0-255")
    meas = props.get("measurements")
    if otype != "annotation" or meas is not None:
        if not isinstance(meas, dict):
            problems.append("measurements is not a map")
        elif not all(isinstance(k, str) and _is_number(v) for k, v in meas.items()):
            problems.append("measurements has non-numeric values")
    geom = feature.get("geometry")
    gtype = geom.get("type") if isinstance(geom, dict) else None
    coords = geom.get("coordinates") if isinstance(geom, dict) else None
    if otype != "annotation":
        if gtype != "Point" or not (isinstance(coords, list) and len(coords) == 2 and all(_is_number(v) for v in coords)):
            problems.append("geometry is not a Point with 2 finite numbers")
    elif gtype == "MultiPoint":  # a points annotation (QuPath's Points tool)
        if not (isinstance(coords, list) and coords and all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p)
                                                            for p in coords)):  # fmt: skip
            problems.append("geometry is not a MultiPoint of finite (x, y) pairs")
    elif otype == "annotation":
        ok = gtype == "Polygon" and isinstance(coords, list) and bool(coords)
        for ring in coords if ok else []:
            ok = ok and (
                isinstance(ring, list)
                and len(ring) >= 4
                and all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in ring)
                and ring[0] == ring[-1]
            )
        if not ok:
            problems.append("geometry is not a Polygon of closed rings of finite numbers")
    return problems


@dataclass(frozen=True, eq=False)
class Annotations:
    """What a QuPath GeoJSON export holds for training: the region annotations and the
    clicked points (``xy`` (N, 2) level-0 px, ``names`` the QuPath class of each, None
    when unclassified)."""

    regions: list[Region]
    xy: np.ndarray
    names: list


def read_annotations(path: str | Path) -> Annotations:
    """Regions (Polygon / MultiPolygon annotations) and clicked points (Point /
    MultiPoint annotations, as QuPath's Points tool exports them) of a QuPath GeoJSON
    export; detections and cells are skipped. A file with no region is an error (the
    regions say where the user looked)."""
    path = Path(path)
    regions = read_regions(path)
    xy, names = [], []
    for i, f in enumerate(_features(_load(path), path)):
        geom = f.get("geometry")
        if not isinstance(geom, dict) or geom.get("type") not in ("Point", "MultiPoint"):
            continue
        otype = _object_type(f)
        if otype is not None and otype.strip().lower() in _DETECTION_TYPES:
            continue
        coords = geom.get("coordinates")
        pts = [coords] if geom["type"] == "Point" else coords
        try:
            a = np.asarray(pts, dtype=np.float64).reshape(-1, np.asarray(pts).shape[-1] if len(pts) else 2)[:, :2]
        except (ValueError, TypeError, IndexError):
            raise AnnotationError(f"{path}: feature {i}: point coordinates must be [x, y] numbers") from None
        if not np.isfinite(a).all():
            raise AnnotationError(f"{path}: feature {i}: a point has NaN or infinite coordinates")
        xy.append(a)
        names += [_class_of(f.get("properties"))] * len(a)
    xy_all = np.concatenate(xy) if xy else np.zeros((0, 2))
    warn_two_classes(path, xy_all, names)
    return Annotations(regions, xy_all, names)
