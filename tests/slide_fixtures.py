"""Synthetic whole-slide files for the slide tests (plain helpers, no pytest).

``write_svs`` writes an Aperio-like SVS that both tiffslide and OpenSlide read with
every level; ``corrupt_tile`` and ``truncate`` damage a file the way real slides get
damaged (a bad tile, an interrupted copy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["blob_image", "block_mean", "corrupt_tile", "truncate", "write_svs", "write_tiff"]


def blob_image(width: int, height: int, seed: int = 0, n_blobs: int = 300) -> np.ndarray:
    """A deterministic (height, width, 3) uint8 test pattern: coloured discs on a pink
    background plus low-amplitude noise, so every pixel and every tile differs."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (236, 210, 226)
    yy, xx = np.ogrid[:height, :width]
    for _ in range(n_blobs):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(4, 24)
        colour = rng.integers(20, 200, size=3, dtype=np.uint8)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, width)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        disc = (xx[:, x0:x1] - cx) ** 2 + (yy[y0:y1] - cy) ** 2 <= r * r  # (y1-y0, x1-x0)
        img[y0:y1, x0:x1][disc] = colour
    noise = rng.integers(-6, 7, size=img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def block_mean(img: np.ndarray, d: int) -> np.ndarray:
    """Area-average (H, W, C) by ``d`` -> (ceil(H/d), ceil(W/d), C) uint8 (edge blocks average
    the pixels they have), rounded half up."""
    if d == 1:
        return img.copy()
    h, w, c = img.shape
    H, W = -(-h // d), -(-w // d)
    pad = np.zeros((H * d, W * d, c), np.float64)
    cnt = np.zeros((H * d, W * d, 1), np.float64)
    pad[:h, :w] = img
    cnt[:h, :w] = 1
    s = pad.reshape(H, d, W, d, c).sum(axis=(1, 3))
    n = cnt.reshape(H, d, W, d, 1).sum(axis=(1, 3))
    return np.floor(s / n + 0.5).astype(np.uint8)


def write_svs(
    path: str | Path,
    img: np.ndarray,
    mpp: float | None = 0.25,
    mag: int = 40,
    downsamples: tuple[int, ...] = (1, 4, 16),
    tile: int = 256,
) -> Path:
    """Write ``img`` (H, W, 3) uint8 as an Aperio-like SVS and return its path.

    Page 0 is level 0 (tiled, description ``Aperio Image Library ...|AppMag = ..|MPP = ..``),
    page 1 a stripped thumbnail, then one top-level tiled page per further downsample with
    SubfileType 0 (not SubIFDs, not marked reduced: tifffile counts reduced pages out of the
    SVS series while OpenSlide counts them in). Levels are block means; zlib compression
    (needs no imagecodecs to write). ``mpp=None`` writes no MPP and ResolutionUnit NONE (so
    OpenSlide's inch default gives no mpp either). ``tile`` must be a multiple of 16.
    """
    import tifffile

    path = Path(path)
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    head = f"Aperio Image Library v12.0.0\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile})"
    desc0 = f"{head}|AppMag = {mag}" + (f"|MPP = {mpp}" if mpp is not None else "")
    kw: dict = {"photometric": "rgb", "compression": "zlib", "metadata": None}
    if mpp is None:
        res: dict = {"resolutionunit": "NONE"}
    else:
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        tw.write(img, tile=(tile, tile), description=desc0, **res, **kw)
        thumb_d = max(1, max(h, w) // 256)
        tw.write(block_mean(img, thumb_d), description=head, **kw)  # page 1: stripped thumbnail
        for d in downsamples[1:]:  # top-level tiled pages, SubfileType 0
            tw.write(block_mean(img, d), tile=(tile, tile), description=head, **kw)
    return path


def write_tiff(path: str | Path, img: np.ndarray, dpi: float | None = 72.0, tile: int | None = 256) -> Path:
    """A plain (non-pyramidal) TIFF: tiled when ``tile`` is given, else stripped; resolution
    ``dpi`` pixels per inch (72 is the usual default of image editors), none when None."""
    import tifffile

    path = Path(path)
    res: dict = {"resolutionunit": "NONE"} if dpi is None else {"resolution": (dpi, dpi), "resolutionunit": "INCH"}
    tl = {"tile": (tile, tile)} if tile else {}
    tifffile.imwrite(path, np.ascontiguousarray(img), photometric="rgb", compression="zlib", metadata=None, **res, **tl)
    return path


def corrupt_tile(path: str | Path, page: int = 0, tile_index: int = 0) -> tuple[int, int]:
    """Overwrite the compressed bytes of one tile of ``page`` with garbage so decoding it
    fails; returns the tile's (x, y) origin in that page's pixels."""
    import tifffile

    path = Path(path)
    with tifffile.TiffFile(path) as tf:
        p = tf.pages[page]
        offset, count = int(p.dataoffsets[tile_index]), int(p.databytecounts[tile_index])
        tiles_across = -(-int(p.imagewidth) // int(p.tilewidth))
        origin = ((tile_index % tiles_across) * int(p.tilewidth), (tile_index // tiles_across) * int(p.tilelength))
    garbage = np.random.default_rng(tile_index).integers(0, 256, size=count, dtype=np.uint8).tobytes()
    garbage = b"\x00\xff" + garbage[2:]  # not a zlib header
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(garbage)
    return origin


def truncate(path: str | Path, keep_fraction: float) -> Path:
    """Cut the file to ``keep_fraction`` of its bytes (an interrupted copy)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep_fraction))
    return path
