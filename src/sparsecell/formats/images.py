"""Decoding images: any file sparsecell reads pixels from goes through :func:`read_image`.

``read_image`` gives (H, W, 3) uint8 RGB whatever the file holds (grey, grey+alpha,
RGB, RGBA, palette, 16-bit, float); ``image_size`` reads the size from the header
without decoding. A missing or unreadable file is an :class:`~sparsecell.errors.ImageError`
naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ImageError

__all__ = ["read_image", "image_size", "pixel_limit", "IMAGE_EXTENSIONS", "MAX_PIXELS"]

#: The image files sparsecell reads (by suffix, any case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _to_rgb_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """Any grey / grey+alpha / RGB / RGBA array of any numeric type -> (H, W, 3) uint8."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first (some TIFFs)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: image has shape {arr.shape}; expected grey, grey+alpha, RGB or RGBA")
    if arr.shape[-1] in (1, 2):  # grey (+ alpha)
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    else:  # RGB (+ alpha)
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0:
            raise ImageError(f"{path}: image has negative pixel values ({arr.dtype}); cannot convert to 8-bit RGB")
        if hi <= 255:
            return arr.astype(np.uint8)
        if hi <= 65535:  # 16-bit data held in a wider integer (PIL mode "I")
            return ((arr.astype(np.int64) + 128) // 257).astype(np.uint8)
        raise ImageError(f"{path}: {arr.dtype} pixel values up to {hi} do not fit 16 bits; cannot convert to 8-bit RGB")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageError(f"{path}: image has NaN or infinite pixel values")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            return np.round(arr * 255).astype(np.uint8)
        if lo >= 0 and hi <= 255:
            return np.round(arr).astype(np.uint8)
        raise ImageError(f"{path}: floating-point pixel values span {lo:g}..{hi:g}; expected 0..1 or 0..255")
    raise ImageError(f"{path}: unsupported pixel type {arr.dtype}")


#: The most pixels (width x height) an image may have, whichever decoder reads it:
#: 100 megapixels (a 10,000 x 10,000 tile, 300 MB as RGB). Whole slides are read by
#: region, not with read_image. Raise it with the environment variable
#: ``SPARSECELL_MAX_PIXELS`` or the ``max_pixels`` argument.
MAX_PIXELS = 100_000_000


def pixel_limit(given: int | None = None) -> int:
    """The pixel limit in force: ``given``, else ``$SPARSECELL_MAX_PIXELS``, else :data:`MAX_PIXELS`."""
    import os

    if given is not None:
        return int(given)
    env = os.environ.get("SPARSECELL_MAX_PIXELS")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ImageError(f"SPARSECELL_MAX_PIXELS = {env!r} is not a number of pixels") from None
    return MAX_PIXELS


def _check_pixels(path: Path, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise ImageError(f"{path}: {width}x{height} px is more than the {limit:,} pixels an image may have "
                         "(set SPARSECELL_MAX_PIXELS to allow more)")  # fmt: skip


def _tiff_page(path: Path):
    """(tifffile module, TiffFile) for a TIFF PIL cannot read, or None."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        return tifffile.TiffFile(path)
    except Exception:  # tifffile raises many types for files it cannot read
        return None


def _tiff_size(page) -> tuple[int, int]:
    return int(page.imagewidth), int(page.imagelength)


def _read_tiff(path: Path, limit: int) -> np.ndarray | None:
    tf = _tiff_page(path)
    if tf is None:
        return None
    with tf:
        try:
            page = tf.pages[0]
            _check_pixels(path, *_tiff_size(page), limit)
            return page.asarray()
        except ImageError:
            raise
        except Exception:
            return None


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image (give the image files, e.g. {path}/*.png)")
    if not path.exists():
        raise ImageError(f"{path}: image file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")


def _pil_open(path: Path, limit: int):
    """PIL's image (not decoded) after checking its size against ``limit``; PIL's own
    bomb check is set to the same limit."""
    import warnings

    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit // 2 + 1  # PIL errors above twice this, warns above it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    try:
        _check_pixels(path, int(im.size[0]), int(im.size[1]), limit)
    except ImageError:
        im.close()
        raise
    return im



def _pil_errors() -> tuple:
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    Grey images are repeated to 3 channels, alpha is dropped, 16-bit images are scaled
    to 8 bits (``v / 257``, rounded; PIL itself keeps the high byte of 16-bit RGB). A
    TIFF that PIL cannot read is tried with ``tifffile`` (first page) when it is
    installed. An image of more than :func:`pixel_limit` pixels is refused before it is
    decoded, by either decoder. A missing or unreadable file is an :class:`ImageError`
    naming it.
    """
    from PIL import Image

    limit = pixel_limit(max_pixels)
    path = Path(path)
    _check_file(path)
    is_tiff = path.suffix.lower() in (".tif", ".tiff")
    try:
        with _pil_open(path, limit) as im:
            im.load()
            if im.mode in ("RGB", "L", "RGBA", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                arr = np.asarray(im)
            elif im.mode in ("P", "PA"):
                arr = np.asarray(im.convert("RGBA"))
            else:  # 1, CMYK, YCbCr, LAB, HSV, ...
                arr = np.asarray(im.convert("RGB"))
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: more than the {limit:,} pixels an image may have (set SPARSECELL_MAX_PIXELS "
                         "to allow more)") from None  # fmt: skip
    except _pil_errors() as e:
        arr = _read_tiff(path, limit) if is_tiff else None
        if arr is None:
            raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {_one_line(e)})") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode it") from None
    return _to_rgb_uint8(arr, path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image, from its header (nothing is decoded)."""
    from PIL import Image

    path = Path(path)
    _check_file(path)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size alone is asked: no bomb check here
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except _pil_errors() as e:
        if path.suffix.lower() in (".tif", ".tiff"):
            tf = _tiff_page(path)
            if tf is not None:
                with tf:
                    try:
                        return _tiff_size(tf.pages[0])
                    except Exception:
                        pass
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {_one_line(e)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
