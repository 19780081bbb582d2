"""Whole-slide reading (sparsecell.slides.reader) on a synthetic Aperio SVS."""

from __future__ import annotations

import pickle
from pathlib import Path
import shutil

import numpy as np
import pytest

pytest.importorskip("tiffslide")
pytest.importorskip("openslide")

from slide_fixtures import blob_image, block_mean, corrupt_tile, truncate, write_svs, write_tiff

from sparsecell.errors import SlideError
from sparsecell.slides.reader import configure_worker, open_slide

W, H = 2048, 1536
BACKENDS = ("tiffslide", "openslide")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return blob_image(W, H, seed=3)  # (H, W, 3) uint8


@pytest.fixture(scope="module")
def svs(tmp_path_factory, image):
    return write_svs(tmp_path_factory.mktemp("slide") / "blobs.svs", image)


def _one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_opens_with_levels_and_mpp(svs, backend):
    with open_slide(svs, backend=backend) as s:
        assert s.backend == backend
        assert s.dimensions == (W, H)
        assert s.level_dimensions == ((W, H), (W // 4, H // 4), (W // 16, H // 16))
        assert s.level_downsamples == (1.0, 4.0, 16.0)
        assert s.mpp == pytest.approx(0.25) and s.mpp_source == "slide"


def test_auto_picks_tiffslide(svs):
    with open_slide(svs) as s:
        assert s.backend == "tiffslide"


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_to_one_read_is_exact(svs, image, backend):
    with open_slide(svs, backend=backend) as s:
        for x, y, w, h in [(0, 0, 300, 200), (250, 511, 517, 260), (W - 100, H - 50, 100, 50)]:
            got = s.read((x, y, x + w, y + h), (w, h))
            assert got.shape == (h, w, 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, image[y : y + h, x : x + w])


@pytest.mark.parametrize("backend", BACKENDS)
def test_downsampled_reads_match_block_means(svs, image, backend):
    with open_slide(svs, backend=backend) as s:
        assert s.best_level(4.0) == 1 and s.best_level(3.95) == 1 and s.best_level(3.9) == 0
        got = s.read((0, 0, W, H), (W // 4, H // 4))  # 1:1 on level 1
        np.testing.assert_array_equal(got, block_mean(image, 4))
        got8 = s.read((512, 256, 1536, 1280), (128, 128))  # level 1, area-averaged 2x2
        want8 = block_mean(image, 8)[32:160, 64:192]
        assert np.abs(got8.astype(int) - want8).max() <= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_box_and_non_integer_scale(svs, image, backend):
    with open_slide(svs, backend=backend) as s:
        got = s.read((100.5, 200.25, 400.75, 377.0), (97, 61))
        assert got.shape == (61, 97, 3)
        # about 3.1 level-0 px per output px: from level 0, close to the area mean
        ref = image[200:377, 100:401].reshape(-1, 3).mean(0)
        assert np.abs(got.reshape(-1, 3).mean(0) - ref).max() < 3
        up = s.read((10.25, 10.25, 20.25, 30.25), (20, 40))  # enlarging from level 0
        assert up.shape == (40, 20, 3)
        half = s.read((10.5, 10.0, 20.5, 20.0), (10, 10))  # half-pixel shift: neighbour means
        want = (image[10:20, 10:20].astype(float) + image[10:20, 11:21]) / 2
        assert np.abs(half.astype(float) - want).max() <= 1


BOXES = [
    ((0, 0, 512, 512), (512, 512)),
    ((1000.3, 700.7, 1800.1, 1300.9), (200, 150)),
    ((0, 0, W, H), (64, 48)),  # from level 2
    ((W - 300, H - 200, W + 300, H + 200), (150, 100)),  # partly outside
    ((-64, -32, 192, 96), (256, 128)),  # partly outside, 1:1
]


def test_backends_give_identical_pixels(svs):
    with open_slide(svs, backend="tiffslide") as a, open_slide(svs, backend="openslide") as b:
        for box, size in BOXES:
            np.testing.assert_array_equal(a.read(box, size), b.read(box, size), err_msg=str(box))
    with open_slide(svs, backend="tiffslide") as a:
        out = a.read(BOXES[3][0], BOXES[3][1])
        assert (out[-40:, :] == 255).all() and (out[:, -60:] == 255).all()  # beyond the slide: white
        out = a.read(*BOXES[4])
        assert (out[:32] == 255).all() and (out[:, :64] == 255).all()
        assert (a.read((W + 10, 0, W + 20, 10), (5, 5)) == 255).all()


def test_thumbnail(svs, image):
    with open_slide(svs) as s:
        thumb, d = s.thumbnail(256)
        assert thumb.shape == (192, 256, 3) and d == pytest.approx(8.0)
        assert np.abs(thumb.astype(int) - block_mean(image, 8)).max() <= 2
        big, d1 = s.thumbnail(4096)  # never enlarged
        assert big.shape == (H, W, 3) and d1 == 1.0


def test_mpp_override_and_missing(tmp_path, svs, image):
    with open_slide(svs, mpp=0.5) as s:
        assert s.mpp == 0.5 and s.mpp_source == "override" and s.mpp_raw == pytest.approx(0.25)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(SlideError) as e:
            open_slide(svs, mpp=bad)
        _one_line_naming(e, svs)
    nompp = write_svs(tmp_path / "nompp.svs", image[:512, :512], mpp=None, downsamples=(1, 4))
    for backend in BACKENDS:
        with open_slide(nompp, backend=backend) as s:
            assert s.mpp is None and s.mpp_source == "none" and s.level_count == 2


@pytest.mark.parametrize("tile", [256, None])
def test_72_dpi_tiff_has_no_mpp(tmp_path, image, tile):
    path = write_tiff(tmp_path / "screen.tif", image[:512, :768], dpi=72, tile=tile)
    with open_slide(path) as s:
        assert s.backend == ("tiffslide" if tile else "image")
        assert s.mpp is None and s.mpp_source == "none"
        assert s.mpp_raw == pytest.approx(25400 / 72)
        np.testing.assert_array_equal(s.read((0, 0, 768, 512), (768, 512)), image[:512, :768])


def test_png_through_image_backend(tmp_path, image):
    from PIL import Image

    path = tmp_path / "tile.png"
    Image.fromarray(image[:300, :400]).save(path)
    with open_slide(path) as s:
        assert s.backend == "image" and s.level_count == 1 and s.dimensions == (400, 300)
        assert s.mpp is None
        np.testing.assert_array_equal(s.read((-10, 0, 390, 300), (400, 300))[:, 10:], image[:300, :390])
        assert s.read((0, 0, 400, 300), (100, 75)).shape == (75, 100, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickled_slide_reopens(svs, image, backend):
    s = open_slide(svs, backend=backend)
    s.read((0, 0, 16, 16), (16, 16))  # handle open in this process
    copy = pickle.loads(pickle.dumps(s))
    assert copy._reader is None
    np.testing.assert_array_equal(copy.read((5, 7, 105, 57), (100, 50)), image[7:57, 5:105])
    assert copy.mpp == s.mpp and copy.level_dimensions == s.level_dimensions
    copy.close()
    s.close()
    configure_worker(0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_tile_fails_on_read(tmp_path, svs, image, backend):
    path = tmp_path / "corrupt.svs"
    shutil.copy(svs, path)
    x, y = corrupt_tile(path, page=0, tile_index=5)
    with open_slide(path, backend=backend) as s:  # open does not decode tiles
        np.testing.assert_array_equal(s.read((0, 0, 256, 256), (256, 256)), image[:256, :256])
        with pytest.raises(SlideError) as e:
            s.read((x, y, x + 256, y + 256), (256, 256))
        _one_line_naming(e, path)
        assert "cannot read level 0" in str(e.value)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_truncated_file(tmp_path, svs, backend):
    path = truncate(shutil.copy(svs, tmp_path / "cut.svs"), 0.5)
    with pytest.raises(SlideError) as e, open_slide(path, backend=backend) as s:
        s.read((0, 0, W, H), (W, H))
    _one_line_naming(e, path)


def test_missing_and_bad_requests(tmp_path, svs):
    missing = tmp_path / "nope.svs"
    with pytest.raises(SlideError) as e:
        open_slide(missing)
    _one_line_naming(e, missing)
    with pytest.raises(SlideError) as e:
        open_slide(svs, backend="bioformats")
    _one_line_naming(e, svs)
    assert "bioformats" in str(e.value)
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide at all" * 100)
    with pytest.raises(SlideError) as e:
        open_slide(junk)
    _one_line_naming(e, junk)
    with open_slide(svs) as s:
        for box, size in [((10, 10, 10, 20), (4, 4)), ((0, 0, 8, 8), (0, 4)), ((0, 0, 8, 8), (4.0, 4)),
                          ((0, 0, 8), (4, 4)), ((0, 0, float("nan"), 8), (4, 4))]:  # fmt: skip
            with pytest.raises(SlideError) as e:
                s.read(box, size)
            _one_line_naming(e, svs)


def test_missing_package_is_named(monkeypatch, svs):
    import sys

    monkeypatch.setitem(sys.modules, "openslide", None)
    with pytest.raises(SlideError) as e:
        open_slide(svs, backend="openslide")
    _one_line_naming(e, svs)
    assert "pip install 'sparsecell[slides]'" in str(e.value)


@pytest.mark.parametrize("backend", ["tiffslide", "image"])
def test_a_tiff_with_placeholder_resolution_records_none(tmp_path, backend):
    # 1 px per inch (tifffile's default when nothing is known; inches when the unit tag
    # is missing, as the TIFF standard says) is no resolution, not 25400 um/px
    import tifffile

    from sparsecell.slides.reader import open_slide

    p = tmp_path / "untagged.tif"
    tifffile.imwrite(p, np.zeros((300, 300, 3), np.uint8), photometric="rgb", metadata=None, resolution=(1, 1),
                     resolutionunit="INCH", **({"tile": (128, 128)} if backend == "tiffslide" else {}))  # fmt: skip
    with open_slide(p, backend=backend) as s:
        assert s.mpp is None and s.mpp_raw is None
    q = tmp_path / "tagged.tif"
    tifffile.imwrite(q, np.zeros((300, 300, 3), np.uint8), photometric="rgb", metadata=None, resolution=(20000, 20000),
                     resolutionunit="CENTIMETER", **({"tile": (128, 128)} if backend == "tiffslide" else {}))  # fmt: skip
    with open_slide(q, backend=backend) as s:
        assert s.mpp == pytest.approx(0.5)


def _declare_size(path, width: int, height: int) -> None:
    """Patch a TIFF's ImageWidth / ImageLength (LONG tags) in place: a small file whose
    header claims a huge image."""
    import struct

    import tifffile

    with tifffile.TiffFile(path) as t:
        where = {tag.code: (tag.valueoffset, tag.dtype) for tag in t.pages[0].tags.values() if tag.code in (256, 257)}
    b = bytearray(Path(path).read_bytes())
    for code, value in ((256, width), (257, height)):
        off, dtype = where[code]
        assert dtype == 4, "the fixture expects LONG size tags"
        b[off:off + 4] = struct.pack("<I", value)
    Path(path).write_bytes(bytes(b))


def test_a_header_declaring_an_impossible_slide_is_refused_in_one_line(tmp_path):
    import tifffile

    p = tmp_path / "huge.tif"
    tifffile.imwrite(p, np.full((512, 512, 3), 230, np.uint8), tile=(256, 256), photometric="rgb", compression="zlib")
    _declare_size(p, 10**6, 10**6)
    assert p.stat().st_size < 10_000
    with pytest.raises(SlideError, match=r"huge.tif: the header declares 1000000x1000000 px, more than a slide holds") as e:
        open_slide(p)
    assert "\n" not in str(e.value)
    _declare_size(p, 400_000, 2_000)  # few pixels, but 200 mm long at 0.5 um/px
    assert open_slide(p).dimensions == (400_000, 2_000)
    with pytest.raises(SlideError, match=r"400000x2000 px \(200 x 1 mm at 0.5 um/px\), more than a slide holds"):
        open_slide(p, mpp=0.5)
    with pytest.raises(SlideError, match="an mpp of 30 um/px is not plausible"):
        open_slide(p, mpp=30)


def test_the_overview_of_a_slide_without_coarse_levels_is_bounded(tmp_path, monkeypatch):
    import sparsecell.slides.reader as reader
    import tifffile

    p = tmp_path / "flat.tif"
    tifffile.imwrite(p, np.full((1024, 1024, 3), 230, np.uint8), tile=(256, 256), photometric="rgb", compression="zlib")
    with open_slide(p) as s:
        assert s.thumbnail(64)[0].shape == (64, 64, 3)
        monkeypatch.setattr(reader, "TISSUE_VIEW_MAX_PIXELS", 1024 * 1024 - 1)
        with pytest.raises(SlideError, match=r"flat.tif: the overview needs level 0 read whole \(1024x1024 px"):
            s.thumbnail(64)
