"""Whole-slide images: open a slide and read any level-0 box at any output size.

:func:`open_slide` gives a :class:`Slide` backed by one of three readers:

``"tiffslide"``
    SVS, NDPI, generic tiled TIFF and the other TIFF-based formats (pure Python, via
    tifffile and zarr).
``"openslide"``
    everything OpenSlide reads (also MRXS, VMS, ...).
``"image"``
    a plain image (PNG, JPEG, BMP, WEBP, a stripped single-level TIFF), decoded whole
    with :func:`sparsecell.formats.images.read_image` (which enforces its pixel limit) and
    kept in memory as a one-level "slide".

``backend="auto"`` sends plain images to ``"image"`` and tries tiffslide, then OpenSlide
for the rest. Both slide backends need the ``slides`` extra (``pip install
'sparsecell[slides]'``).

Coordinates are level-0 pixels throughout. :meth:`Slide.read` takes a float box
``(x0, y0, x1, y1)`` and an output size ``(w, h)`` and resamples from the coarsest
pyramid level that is not coarser than the request, so tiles at any resolution come out
the same whichever backend reads them; parts outside the slide are white.

Processes: the backend handle is opened lazily and belongs to the process that opened
it. A pickled :class:`Slide` carries no handle, so each DataLoader worker reopens the
file (tiffslide handles must not be shared across processes, tiffslide issue #18). Call
:func:`configure_worker` from ``worker_init_fn`` to limit tiffslide's decode threads.

Every failure is a :class:`~sparsecell.errors.SlideError` whose one-line message names
the file.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, SlideError

# tifffile logs damaged pages ("invalid page offset") itself; the one-line SlideError says it instead
logging.getLogger("tifffile").setLevel(logging.CRITICAL)
# tiffslide decodes through zarr's own asyncio loop: after a bad tile, asyncio reports the
# sibling reads it drops ("Task was destroyed but it is pending") at exit
logging.getLogger("asyncio").setLevel(logging.CRITICAL)
warnings.filterwarnings("ignore", message=r"coroutine 'concurrent_map\.<locals>\.run' was never awaited", category=RuntimeWarning)

__all__ = [
    "BACKENDS",
    "MPP_RANGE",
    "SLIDE_EXTENSIONS",
    "Slide",
    "configure_worker",
    "open_slide",
]

#: Pyramidal whole-slide formats (by suffix, any case).
SLIDE_EXTENSIONS = (".svs", ".ndpi", ".tif", ".tiff", ".mrxs", ".scn", ".vms", ".bif", ".svslide")

#: Plain image suffixes that always go through the ``"image"`` backend in ``auto`` mode.
_PLAIN_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: The backends :func:`open_slide` accepts.
BACKENDS = ("auto", "tiffslide", "openslide", "image")

#: A slide's own mpp (um per level-0 pixel) outside this range is treated as unknown: such
#: values come from a screen resolution (72 dpi gives 352.78 um/px), not from a scanner.
MPP_RANGE = (0.05, 20.0)

#: The most level-0 pixels a slide may declare: a 75 x 50 mm large-format slide
#: scanned whole at 0.12 um/px has 2.6e11. A small file whose header claims more (a
#: corrupt or hostile header) is refused before anything is read.
MAX_SLIDE_PIXELS = 300_000_000_000
#: The longest side a slide may have at its resolution, in mm (glass is 75 mm long).
MAX_SLIDE_SIDE_MM = 100.0
#: The most level pixels the tissue view (the whole-slide overview that the tissue mask
#: is computed on) may decode: a slide without coarse pyramid levels has to be read
#: whole for it; this many px take a few minutes.
TISSUE_VIEW_MAX_PIXELS = 16_000_000_000

#: A pyramid level is used for a request whose scale (level-0 px per output px) is up to
#: this factor below the level's downsample: within 2 % a level counts as "not coarser".
LEVEL_TOLERANCE = 1.02

#: The most level pixels one backend call fetches; larger requests are read in bands of
#: output rows, so a thumbnail of a slide without a coarse level stays memory bounded.
_FETCH_BUDGET = 32_000_000

_INSTALL_HINT = "pip install 'sparsecell[slides]'"


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _reason(e: BaseException) -> str:
    text = _one_line(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def configure_worker(worker_id: int | None = None) -> None:
    """Prepare a DataLoader worker process for slide reading (use as ``worker_init_fn``).

    Sets ``TIFFSLIDE_NUM_DECODE_THREADS=1`` unless it is already set, so that N workers
    do not each start half the machine's CPUs as decode threads. Slides themselves need
    nothing: a :class:`Slide` reopens its file in each process on first use.

    Parameters
    ----------
    worker_id : int, optional
        The worker's index, as DataLoader passes it; unused.
    """
    os.environ.setdefault("TIFFSLIDE_NUM_DECODE_THREADS", "1")


# --------------------------------------------------------------------------- backends


def _import_tiffslide():
    try:
        import tiffslide
    except ImportError as e:
        raise ImportError(f"tiffslide is not installed ({_one_line(e)}); {_INSTALL_HINT}") from None
    return tiffslide


def _import_openslide():
    try:
        import openslide
    except (ImportError, OSError) as e:  # OSError: the C library cannot be loaded
        raise ImportError(f"openslide is not installed ({_one_line(e)}); {_INSTALL_HINT}") from None
    return openslide


class _LibraryReader:
    """A slide library's handle (tiffslide's or OpenSlide's): its levels and stated mpp,
    read at open (which validates the level series and the properties)."""

    def __init__(self, handle, mpp_key: str):
        self.h = handle
        self.level_dimensions = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in handle.level_downsamples)
        self.mpp_raw = _as_float(handle.properties.get(mpp_key))

    def close(self) -> None:
        self.h.close()


class _TiffslideReader(_LibraryReader):
    name = "tiffslide"

    def __init__(self, path: Path):
        super().__init__(_import_tiffslide().TiffSlide(str(path)), "tiffslide.mpp-x")
        props = self.h.properties
        if self.mpp_raw is not None and props.get("tiffslide.vendor") is None:  # generic TIFF: from its tags
            try:
                if not _tiff_records_resolution(self.h.ts_tifffile.pages[0].tags):
                    self.mpp_raw = None
            except Exception:
                pass

    def is_single_strip_image(self) -> bool:
        try:
            return len(self.level_dimensions) == 1 and not self.h.ts_tifffile.pages[0].is_tiled
        except Exception:  # kerchunk-backed or odd files: treat as a slide
            return False

    def read(self, level: int, x0: int, y0: int, w: int, h: int, loc: tuple[int, int]) -> np.ndarray:
        arr = self.h.read_region(loc, level, (w, h), as_array=True, padding=False)
        return np.asarray(arr)  # (h, w, C)


class _OpenslideReader(_LibraryReader):
    name = "openslide"

    def __init__(self, path: Path):
        super().__init__(_import_openslide().OpenSlide(str(path)), "openslide.mpp-x")

    def read(self, level: int, x0: int, y0: int, w: int, h: int, loc: tuple[int, int]) -> np.ndarray:
        rgba = np.asarray(self.h.read_region(loc, level, (w, h)))  # (h, w, 4), not premultiplied
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        if alpha.size and alpha.min() < 255:  # missing tiles / outside: composite over white
            a = alpha.astype(np.float32) / 255.0
            rgb = np.round(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
        return rgb


class _ImageReader:
    name = "image"

    def __init__(self, path: Path, decode: bool = True):
        from ..formats.images import image_size, pixel_limit

        self.path = path
        w, h = image_size(path)
        limit = pixel_limit()
        if w * h > limit:
            raise ImageError(
                f"{w}x{h} px is more than the {limit:,} pixels a plain image may have; "
                "convert it to a tiled pyramidal TIFF or raise SPARSECELL_MAX_PIXELS"
            )
        self.level_dimensions = ((int(w), int(h)),)
        self.level_downsamples = (1.0,)
        self.mpp_raw = _image_mpp(path)
        self._pixels: np.ndarray | None = None  # (H, W, 3) uint8, decoded on first read

    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            from ..formats.images import read_image

            arr = read_image(self.path)
            if (arr.shape[1], arr.shape[0]) != self.level_dimensions[0]:
                raise ImageError(f"decoded size {arr.shape[1]}x{arr.shape[0]} differs from its header")
            self._pixels = arr
        return self._pixels

    def read(self, level: int, x0: int, y0: int, w: int, h: int, loc: tuple[int, int]) -> np.ndarray:
        return self.pixels()[y0 : y0 + h, x0 : x0 + w]

    def close(self) -> None:
        self._pixels = None


def _as_float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _tiff_records_resolution(tags) -> bool:
    """Whether a TIFF page's tags state a resolution: an XResolution other than 1 px per
    unit, in a unit (inch, the TIFF default, or centimetre). Writers put 1/1 there when
    they know nothing (tifffile's default), which read as inches is 25400 um/px."""
    try:
        x = tags["XResolution"].value if "XResolution" in tags else None
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        num, den = (x if isinstance(x, tuple) else (x, 1)) if x is not None else (0, 1)
        return unit in (2, 3) and den > 0 and num / den not in (0.0, 1.0)
    except Exception:
        return False


def _tiff_file_records_resolution(path: Path) -> bool:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            return _tiff_records_resolution(tf.pages[0].tags)
    except Exception:
        return False


def _image_mpp(path: Path) -> float | None:
    """um/px from a plain image's header (dpi), or None; nothing is decoded. A TIFF
    without a resolution, or whose unit is none, records no resolution."""
    if path.suffix.lower() in (".tif", ".tiff") and not _tiff_file_records_resolution(path):
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            dpi = im.info.get("dpi")
    except Exception:
        return None
    try:
        d = float(dpi[0]) if dpi else 0.0
    except (TypeError, ValueError, IndexError):
        return None
    return 25400.0 / d if d > 0 and math.isfinite(d) else None


def _open_reader(path: Path, backend: str):
    """Open ``path`` with ``backend`` (not "auto"); raises SlideError."""
    try:
        if backend == "tiffslide":
            return _TiffslideReader(path)
        if backend == "openslide":
            return _OpenslideReader(path)
        return _ImageReader(path)
    except SlideError:
        raise
    except ImportError as e:
        raise SlideError(f"{path}: backend {backend!r} is not available: {_one_line(e)}") from None
    except ImageError as e:
        msg = _one_line(e)
        prefix = f"{path}: "
        msg = msg.removeprefix(prefix)
        raise SlideError(f"{path}: cannot open with backend 'image': {msg}") from None
    except (Exception, MemoryError) as e:
        raise SlideError(f"{path}: cannot open with backend {backend!r}: {_reason(e)}") from None


def _open_auto(path: Path):
    """The reader ``backend="auto"`` picks for ``path``; raises SlideError."""
    suffix = path.suffix.lower()
    if suffix in _PLAIN_IMAGE_EXTENSIONS:
        return _open_reader(path, "image")
    is_tiff = suffix in (".tif", ".tiff")
    problems: list[str] = []
    missing: list[str] = []
    try:
        reader = _TiffslideReader(path)
    except ImportError:
        missing.append("tiffslide")
    except (Exception, MemoryError) as e:
        problems.append(f"tiffslide: {_reason(e)}")
    else:
        if is_tiff and reader.is_single_strip_image():
            reader.close()
            return _open_reader(path, "image")
        return reader
    try:
        return _OpenslideReader(path)
    except ImportError:
        missing.append("openslide")
    except (Exception, MemoryError) as e:
        problems.append(f"openslide: {_reason(e)}")
    if is_tiff:  # a TIFF neither slide reader takes may still be a plain image
        try:
            return _ImageReader(path)
        except (Exception, MemoryError) as e:
            problems.append(f"image: {_reason(e)}")
    if missing and not problems:
        raise SlideError(f"{path}: cannot open a whole slide: {' and '.join(missing)} not installed; {_INSTALL_HINT}")
    why = "; ".join(problems)
    if missing:
        why += f" ({' and '.join(missing)} not installed: {_INSTALL_HINT})"
    raise SlideError(f"{path}: not a readable slide or image, or the file is truncated/corrupt ({why})")


# --------------------------------------------------------------------------- the slide


class Slide:
    """A whole-slide image opened by :func:`open_slide`.

    Attributes
    ----------
    path : Path
        The file.
    backend : str
        ``"tiffslide"``, ``"openslide"`` or ``"image"``.
    dimensions : tuple of int
        Level-0 (width, height).
    level_dimensions : tuple of (int, int)
        (width, height) of each pyramid level, level 0 first.
    level_downsamples : tuple of float
        Level-0 pixels per level pixel, for each level (1.0 first).
    mpp : float or None
        Level-0 micrometres per pixel: the override given to :func:`open_slide`, else
        the slide's own when within :data:`MPP_RANGE`, else None.
    mpp_source : str
        ``"override"``, ``"slide"`` or ``"none"``.
    mpp_raw : float or None
        The mpp the file itself states (also when it was rejected as implausible, e.g.
        352.78 from a 72 dpi TIFF), for messages.

    Notes
    -----
    The backend handle opens lazily and is cached per process (``os.getpid()``);
    pickling drops it, so a Slide passed to DataLoader workers reopens in each. Use as
    a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, backend: str, reader, mpp: float | None = None):
        self.path = Path(path)
        self.backend = backend
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(reader.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(reader.level_downsamples)
        self.dimensions: tuple[int, int] = self.level_dimensions[0]
        self.mpp_raw: float | None = reader.mpp_raw
        if mpp is not None:
            self.mpp, self.mpp_source = float(mpp), "override"
        elif self.mpp_raw is not None and MPP_RANGE[0] <= self.mpp_raw <= MPP_RANGE[1]:
            self.mpp, self.mpp_source = float(self.mpp_raw), "slide"
        else:
            self.mpp, self.mpp_source = None, "none"
        self._lock = threading.Lock()
        self._reader = reader
        self._pid = os.getpid()

    # -- handle management

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_pid"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _handle(self):
        """This process's backend reader, (re)opened on first use in a process."""
        reader, pid = self._reader, self._pid
        if reader is not None and pid == os.getpid():
            return reader
        with self._lock:
            if self._reader is None or self._pid != os.getpid():
                if not self.path.exists():
                    raise SlideError(f"{self.path}: slide file not found (it was there when first opened)")
                reader = _open_reader(self.path, self.backend)
                if reader.level_dimensions != self.level_dimensions:
                    raise SlideError(f"{self.path}: the file changed since it was opened (levels differ)")
                self._reader, self._pid = reader, os.getpid()  # a parent's handle is dropped, not closed
            return self._reader

    def close(self) -> None:
        """Close this process's backend handle (a later read reopens it)."""
        reader, self._reader = self._reader, None
        if reader is not None and self._pid == os.getpid():
            try:
                reader.close()
            except Exception:
                pass
        self._pid = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        mpp = f"{self.mpp:g}" if self.mpp is not None else "None"
        return (f"Slide({str(self.path)!r}, backend={self.backend!r}, {w}x{h}, "
                f"levels={len(self.level_dimensions)}, mpp={mpp} ({self.mpp_source}))")  # fmt: skip

    # -- reading

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    def best_level(self, scale: float) -> int:
        """The coarsest level whose downsample is at most ``scale * 1.02`` (level-0 px per
        output px), i.e. the coarsest level read without upsampling; 0 for ``scale < 1``."""
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= scale * LEVEL_TOLERANCE and d >= self.level_downsamples[best]:
                best = i
        return best

    def _fetch(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Level pixels [y0:y1, x0:x1] (level frame) as (y1-y0, x1-x0, 3) uint8; outside the
        level is white."""
        lw, lh = self.level_dimensions[level]
        out = np.full((y1 - y0, x1 - x0, 3), 255, np.uint8)  # (h, w, 3)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, lw), min(y1, lh)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        ds = self.level_downsamples[level]
        loc = (_level0_location(cx0, ds), _level0_location(cy0, ds))
        try:
            arr = self._handle().read(level, cx0, cy0, cx1 - cx0, cy1 - cy0, loc)  # (h, w, C)
            arr = _to_rgb(arr, self.path)
        except SlideError:
            raise
        except (Exception, MemoryError) as e:
            raise SlideError(
                f"{self.path}: cannot read level {level} at ({cx0}, {cy0}) size {cx1 - cx0}x{cy1 - cy0} "
                f"(level px) with {self.backend}: {_reason(e)}"
            ) from None
        if arr.shape[:2] != (cy1 - cy0, cx1 - cx0):
            raise SlideError(
                f"{self.path}: level {level} at ({cx0}, {cy0}) gave {arr.shape[1]}x{arr.shape[0]} px "
                f"instead of {cx1 - cx0}x{cy1 - cy0}; the file may be truncated"
            )
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = arr
        return out

    def read(self, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
        """Read a level-0 box resampled to ``size``.

        Parameters
        ----------
        box : (x0, y0, x1, y1)
            The region in level-0 pixels (floats allowed; pixel edges, so
            ``(0, 0, w, h)`` is the whole slide). It may reach outside the slide.
        size : (w, h)
            Output width and height, positive ints.

        Returns
        -------
        np.ndarray
            (h, w, 3) uint8 RGB. Read from the coarsest level whose downsample is at
            most ``min(box w / w, box h / h) * 1.02`` (never upsampled from a coarser
            level than needed) and resampled with PIL (area averaging when shrinking,
            bilinear when enlarging), the box mapped exactly into that level's pixel
            frame, so sub-pixel boxes are exact. A box that lands on whole level
            pixels at the same size is copied without resampling. Outside the slide is
            white (255).

        Raises
        ------
        SlideError
            A bad box or size, or a tile that cannot be read (one line naming the file).
        """
        x0, y0, x1, y1 = _check_box(self.path, box)
        w, h = _check_size(self.path, size)
        scale = min((x1 - x0) / w, (y1 - y0) / h)
        level = self.best_level(scale)
        ds = self.level_downsamples[level]
        bx0, by0, bx1, by1 = x0 / ds, y0 / ds, x1 / ds, y1 / ds  # the box in the level's frame
        ix0, iy0 = round(bx0), round(by0)
        exact = (
            abs(bx0 - ix0) < 1e-6 and abs(by0 - iy0) < 1e-6
            and abs(bx1 - (ix0 + w)) < 1e-6 and abs(by1 - (iy0 + h)) < 1e-6
        )  # fmt: skip
        if exact:
            return self._fetch(level, ix0, iy0, ix0 + w, iy0 + h)
        return self._resample(level, (bx0, by0, bx1, by1), w, h)

    def _resample(self, level: int, lbox: tuple[float, float, float, float], w: int, h: int) -> np.ndarray:
        from PIL import Image

        bx0, by0, bx1, by1 = lbox
        sx, sy = (bx1 - bx0) / w, (by1 - by0) / h  # level px per output px
        shrink = sx > 1.0 and sy > 1.0
        resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        mx, my = math.ceil(max(1.0, sx)) + 1, math.ceil(max(1.0, sy)) + 1  # filter support + 1
        fx0, fx1 = math.floor(bx0) - mx, math.ceil(bx1) + mx
        # bands of output rows, each fetching at most _FETCH_BUDGET level pixels
        rows_per_band = max(1, int(_FETCH_BUDGET / max(1, fx1 - fx0) / max(sy, 1.0)) - 2 * my)
        out = np.empty((h, w, 3), np.uint8)  # (h, w, 3)
        for r0 in range(0, h, rows_per_band):
            r1 = min(h, r0 + rows_per_band)
            b0, b1 = by0 + r0 * sy, by0 + r1 * sy
            fy0, fy1 = math.floor(b0) - my, math.ceil(b1) + my
            src = self._fetch(level, fx0, fy0, fx1, fy1)  # (fy1-fy0, fx1-fx0, 3)
            im = Image.fromarray(src)
            res = im.resize((w, r1 - r0), resample=resample, box=(bx0 - fx0, b0 - fy0, bx1 - fx0, b1 - fy0))
            out[r0:r1] = np.asarray(res)
        return out

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """The whole slide shrunk so its longer side is at most ``max_side`` px.

        Read from the coarsest level that is fine enough, in bands, so memory stays
        bounded even without a coarse pyramid level; never enlarged.

        Parameters
        ----------
        max_side : int
            The longer output side, in px.

        Returns
        -------
        image : np.ndarray
            (h, w, 3) uint8 RGB.
        downsample : float
            Level-0 px per thumbnail px, the same along x and y: thumbnail pixel
            ``(i, j)`` covers level-0 ``[j*d, (j+1)*d) x [i*d, (i+1)*d)``. The last
            row/column may reach less than a pixel past the slide (white there).
        """
        if isinstance(max_side, bool) or not isinstance(max_side, numbers.Integral) or max_side <= 0:
            raise SlideError(f"{self.path}: thumbnail max_side must be a positive int, got {max_side!r}")
        W, H = self.dimensions
        d = max(1.0, max(W, H) / int(max_side))
        w, h = max(1, math.ceil(W / d - 1e-9)), max(1, math.ceil(H / d - 1e-9))
        level = self.best_level(d)
        lw, lh = self.level_dimensions[level]
        if lw * lh > TISSUE_VIEW_MAX_PIXELS:
            raise SlideError(f"{self.path}: the overview needs level {level} read whole ({lw}x{lh} px, "
                             f"{lw * lh / 1e9:.0f} gigapixels; at most {TISSUE_VIEW_MAX_PIXELS / 1e9:.0f}): the file "
                             "has no coarse pyramid level; save it with one (e.g. vips tiffsave --tile --pyramid)")  # fmt: skip
        return self.read((0.0, 0.0, w * d, h * d), (w, h)), d


def _level0_location(v: int, ds: float) -> int:
    """A level-0 coordinate that backends map to level coordinate ``v`` (they compute
    ``int(loc / ds)``); exact for integer downsamples."""
    loc = math.floor(v * ds + 1e-9)
    while int(loc / ds) < v:
        loc += 1
    while loc > 0 and int(loc / ds) > v:
        loc -= 1
    return loc


def _to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
        return arr
    from ..formats.images import _to_rgb_uint8

    try:
        return _to_rgb_uint8(arr, path)
    except ImageError as e:
        raise SlideError(_one_line(e)) from None


def _check_box(path: Path, box) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise SlideError(f"{path}: box must be 4 numbers (x0, y0, x1, y1) in level-0 px, got {box!r}") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise SlideError(f"{path}: box must be 4 finite numbers (x0, y0, x1, y1) in level-0 px, got {box!r}")
    x0, y0, x1, y1 = vals
    if x1 <= x0 or y1 <= y0:
        raise SlideError(f"{path}: box {vals} has a non-positive size ({x1 - x0:g} x {y1 - y0:g} px)")
    return vals


def _check_size(path: Path, size) -> tuple[int, int]:
    from ..formats.images import pixel_limit

    try:
        w, h = size
    except (TypeError, ValueError):
        raise SlideError(f"{path}: size must be (w, h), two positive ints, got {size!r}") from None
    for v in (w, h):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise SlideError(f"{path}: size must be (w, h), two positive ints, got {size!r}")
    w, h = int(w), int(h)
    limit = pixel_limit()
    if w * h > limit:
        raise SlideError(f"{path}: output size {w}x{h} is more than the {limit:,} pixels one read may give "
                         "(read tiles, or set SPARSECELL_MAX_PIXELS)")  # fmt: skip
    return w, h


# --------------------------------------------------------------------------- opening


def open_slide(path: str | os.PathLike, backend: str = "auto", mpp: float | None = None) -> Slide:
    """Open a whole-slide image (or a plain image as a one-level slide).

    Only headers are read here (the ``"image"`` backend decodes on the first read).

    Parameters
    ----------
    path : str or PathLike
        The slide file (see :data:`SLIDE_EXTENSIONS`) or a plain image.
    backend : {"auto", "tiffslide", "openslide", "image"}
        ``"auto"``: plain images (PNG, JPEG, BMP, WEBP, and TIFFs that are single-level
        stripped images or that no slide reader opens) use ``"image"``; others try
        tiffslide, then OpenSlide. A named backend is used as is.
    mpp : float, optional
        Level-0 um/px to use instead of the slide's own (must be > 0 and finite).

    Returns
    -------
    Slide

    Raises
    ------
    SlideError
        Missing file, unknown backend, backend not installed, not a slide or image,
        truncated or corrupt file, bad ``mpp`` (one line naming the file).
    """
    p = Path(path)
    if backend not in BACKENDS:
        raise SlideError(f"{p}: unknown slide backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if mpp is not None:
        m = _as_float(mpp) if not isinstance(mpp, bool) else None
        if m is None or m <= 0:
            raise SlideError(f"{p}: mpp override must be a positive finite number of um/px, got {mpp!r}")
        if not MPP_RANGE[0] <= m <= MPP_RANGE[1]:
            raise SlideError(f"{p}: an mpp of {m:g} um/px is not plausible for a slide "
                             f"({MPP_RANGE[0]:g}-{MPP_RANGE[1]:g} um per px)")  # fmt: skip
        mpp = m
    if p.is_dir() and p.suffix.lower() != ".mrxs":
        raise SlideError(f"{p}: is a folder, not a slide file")
    if not p.exists():
        raise SlideError(f"{p}: slide file not found")
    reader = _open_auto(p) if backend == "auto" else _open_reader(p, backend)
    if not reader.level_dimensions or min(min(d) for d in reader.level_dimensions[:1]) <= 0:
        raise SlideError(f"{p}: the slide has no image (empty level 0)")
    slide = Slide(p, reader.name, reader, mpp=mpp)
    W, H = slide.dimensions
    side_mm = max(W, H) * slide.mpp / 1000 if slide.mpp is not None else 0.0
    if W * H > MAX_SLIDE_PIXELS or side_mm > MAX_SLIDE_SIDE_MM:
        size = f"{W}x{H} px" + (f" ({W * slide.mpp / 1000:.0f} x {H * slide.mpp / 1000:.0f} mm at {slide.mpp:g} um/px)" if side_mm else "")
        slide.close()
        raise SlideError(f"{p}: the header declares {size}, more than a slide holds (at most "
                         f"{MAX_SLIDE_PIXELS / 1e9:.0f} gigapixels and {MAX_SLIDE_SIDE_MM:g} mm a side); "
                         "the file is corrupt or not a slide")  # fmt: skip
    return slide
