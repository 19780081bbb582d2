"""Decoding images: one pixel limit for every decoder (PIL and tifffile), with an
explicit override; arbitrary bytes give nothing but an ImageError."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sparsecell.errors import ImageError
from sparsecell.formats.images import MAX_PIXELS, image_size, pixel_limit, read_image


def test_the_limit_and_its_override(monkeypatch):
    assert pixel_limit() == MAX_PIXELS == 100_000_000
    monkeypatch.setenv("SPARSECELL_MAX_PIXELS", "2e8")
    assert pixel_limit() == 200_000_000 and pixel_limit(50) == 50
    monkeypatch.setenv("SPARSECELL_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="SPARSECELL_MAX_PIXELS = 'lots'"):
        pixel_limit()


def test_pil_images_above_the_limit_are_refused_before_decoding(tmp_path):
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", max_pixels=120_000).shape == (300, 400, 3)
    with pytest.raises(ImageError, match=r"a.png: 400x300 px is more than the 119,999 pixels"):
        read_image(tmp_path / "a.png", max_pixels=119_999)
    assert image_size(tmp_path / "a.png") == (400, 300)  # the size alone is always readable


def test_a_tiff_bomb_is_refused_by_the_tiff_decoder_too(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    # PIL cannot read this (planar, zlib, tiled float): tifffile would decode it
    tifffile.imwrite(tmp_path / "bomb.tif", np.zeros((3, 2048, 2048), np.float32), compression="zlib",
                     tile=(256, 256), planarconfig="separate", photometric="rgb")  # fmt: skip
    assert (tmp_path / "bomb.tif").stat().st_size < 200_000
    with pytest.raises(ImageError, match="bomb.tif: .* pixels"):
        read_image(tmp_path / "bomb.tif", max_pixels=1_000_000)
    from sparsecell.formats.images import _read_tiff

    with pytest.raises(ImageError, match="bomb.tif: 2048x2048 px is more than"):  # tifffile's own path
        _read_tiff(tmp_path / "bomb.tif", 1_000_000)
    assert read_image(tmp_path / "bomb.tif", max_pixels=5_000_000).shape == (2048, 2048, 3)
    assert image_size(tmp_path / "bomb.tif") == (2048, 2048)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".webp"]))
def test_random_bytes_are_only_image_errors(data, suffix):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{suffix}"
        p.write_bytes(data)
        with pytest.raises(ImageError):
            read_image(p)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 4000))
def test_truncated_pngs_are_image_errors(cut):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.png"
        p.write_bytes(data[: min(cut, len(data) - 1)])
        with pytest.raises(ImageError):
            read_image(p)
