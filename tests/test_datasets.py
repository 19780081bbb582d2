"""Dataset adapters: fixtures written here, and the real data in ../shared/data."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from sparsecell import datasets

from sparsecell.formats import images as imageio
from sparsecell.datasets import PointDataset, Sample, bcdata, crchisto, folder, shidc
from sparsecell.datasets.crchisto import CLASSES as CRCHISTO_CLASSES
from sparsecell.errors import AnnotationError, ConfigError, ImageError, SparsecellError
from sparsecell.formats.images import read_image
from sparsecell.formats.points import Points


# ---------------------------------------------------------------------------------------
# Fixture helpers
# ---------------------------------------------------------------------------------------
def _image(path, w=32, h=24, mode="RGB", value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if value is None else np.full((h, w, 3), value, np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return arr


def _savemat(path, arr):
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"detection": np.asarray(arr, np.float64).reshape(-1, 2)})


def _h5(path, arr):
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("coordinates", data=np.asarray(arr, np.int64).reshape(-1, 2))


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------
# read_image
# ---------------------------------------------------------------------------------------
def test_read_image_rgb_grey_rgba_palette(tmp_path):
    arr = _image(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, arr)

    grey = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    g = read_image(tmp_path / "grey.png")
    assert g.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(g[:, :, c], grey)

    rgba = np.dstack([arr, np.full((24, 32), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), arr)

    Image.fromarray(arr).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (24, 32, 3)

    Image.fromarray(arr).save(tmp_path / "a.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), arr)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == (24, 32, 3)


def test_read_image_16_bit(tmp_path):
    v = np.array([[0, 257, 65535, 32896]], np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")  # PIL mode I;16
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 255, 128]


def test_read_image_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    rgb16 = (np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 3000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    out = read_image(tmp_path / "rgb16.tif")
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    # PIL reads 16-bit RGB itself (keeping the high byte), within 1 of v / 257
    expected = ((rgb16.astype(np.int32) + 128) // 257)
    assert np.abs(out.astype(np.int32) - expected).max() <= 1
    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    tifffile.imwrite(tmp_path / "float.tiff", f, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "float.tiff"), np.round(f * 255).astype(np.uint8))
    assert imageio.image_size(tmp_path / "float.tiff") == (2, 2)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_read_image_errors(tmp_path):
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "missing.png")
    assert "missing.png: image file not found" in _one_line(e)
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "junk.png")
    assert "junk.png: not a readable image" in _one_line(e)
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageError, match=r"junk\.tif: not a readable image"):
        read_image(tmp_path / "junk.tif")
    with pytest.raises(ImageError, match="is a folder, not an image"):
        read_image(tmp_path)
    _image(tmp_path / "cut.png", 64, 64)
    raw = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match=r"cut\.png: not a readable image"):
        read_image(tmp_path / "cut.png")


# ---------------------------------------------------------------------------------------
# CRCHisto fixtures: both layouts
# ---------------------------------------------------------------------------------------
def _crchisto_image(folder, name, points, classes=None):
    _image(folder / name / f"{name}.bmp", 20, 20)
    _savemat(folder / name / f"{name}_detection.mat", points)
    for cname, pts in (classes or {}).items():
        _savemat(folder / name / f"{name}_{cname}.mat", pts)


def _authors_layout(root):
    for n in (1, 2, 10):
        name = f"img{n}"
        pts = [[1, 1], [n, n + 1]]
        _image(root / "Detection" / name / f"{name}.bmp", 20, 20)
        _savemat(root / "Detection" / name / f"{name}_detection.mat", pts)
        _image(root / "Classification" / name / f"{name}.bmp", 20, 20)
        _savemat(root / "Classification" / name / f"{name}_epithelial.mat", pts[:1])
        _savemat(root / "Classification" / name / f"{name}_others.mat", np.zeros((0, 2)))


def test_crchisto_authors_layout(tmp_path):
    _authors_layout(tmp_path)
    for split in (None, "all"):
        ds = crchisto.dataset(tmp_path, split)
        assert ds.ids() == ["img1", "img2", "img10"]  # natural order
        assert ds.classes == ("nucleus",)
        assert ds.counts() == {"nucleus": 6}
    s = ds[2]
    assert isinstance(s, Sample) and s.image_id == "img10" and s.image.shape == (20, 20, 3)
    np.testing.assert_array_equal(s.points.xy, [[0, 0], [9, 10]])  # 1-based -> 0-based
    cl = crchisto.dataset(tmp_path, mode="classes")
    assert cl.classes == CRCHISTO_CLASSES
    assert cl.counts() == {"epithelial": 3, "fibroblast": 0, "inflammatory": 0, "others": 0}
    assert cl.image_path(0).parent.parent.name == "Classification"
    assert datasets.splits("crchisto", tmp_path) == ["all"]
    with pytest.raises(AnnotationError, match="no split 'train'"):
        crchisto.dataset(tmp_path, "train")


def test_crchisto_split_layout(tmp_path):
    _crchisto_image(tmp_path / "train", "img10", [[1, 1]], {"epithelial": [[1, 1]]})
    _crchisto_image(tmp_path / "train", "img9", [[2, 2], [3, 3]], {"fibroblast": [[3, 3]]})
    _crchisto_image(tmp_path / "test", "img4", [[20, 20]])  # (20, 20) 1-based: last pixel
    assert datasets.splits("crchisto", tmp_path) == ["train", "test"]
    tr = crchisto.dataset(tmp_path, "train")
    assert tr.ids() == ["img9", "img10"] and tr.counts() == {"nucleus": 3}
    assert crchisto.dataset(tmp_path, "train", mode="classes").counts()["fibroblast"] == 1
    assert crchisto.dataset(tmp_path).ids() == ["img4", "img9", "img10"]
    assert crchisto.dataset(tmp_path, "test").points(0).xy.tolist() == [[19, 19]]
    # a split folder given directly
    assert crchisto.dataset(tmp_path / "train").ids() == ["img9", "img10"]
    with pytest.raises(AnnotationError) as e:
        crchisto.dataset(tmp_path, "validation")
    msg = _one_line(e)
    assert "validation" in msg and "train, test" in msg
    with pytest.raises(ConfigError, match="mode"):
        crchisto.dataset(tmp_path, "train", mode="nuclei")


def test_crchisto_missing_files(tmp_path):
    with pytest.raises(AnnotationError) as e:
        crchisto.dataset(tmp_path / "nowhere", "train")
    msg = _one_line(e)
    assert "nowhere" in msg and "not found" in msg
    _crchisto_image(tmp_path / "train", "img1", [[1, 1]])
    (tmp_path / "train" / "img1" / "img1.bmp").unlink()
    with pytest.raises(ImageError, match=r"img1\.bmp: CRCHisto image not found"):
        crchisto.dataset(tmp_path, "train")
    _image(tmp_path / "train" / "img1" / "img1.bmp", 20, 20)
    (tmp_path / "train" / "img1" / "img1_detection.mat").unlink()
    with pytest.raises(AnnotationError, match=r"img1_detection\.mat: CRCHisto detection file not found"):
        crchisto.dataset(tmp_path, "train")


def test_points_outside_raise_or_drop(tmp_path):
    _crchisto_image(tmp_path / "train", "img1", [[1, 1], [25, 3], [5, 5]])  # x=24 in a 20x20 image
    ds = crchisto.dataset(tmp_path, "train")
    with pytest.raises(AnnotationError) as e:
        ds[0]
    msg = _one_line(e)
    assert "img1_detection.mat" in msg and "1 of 3 points" in msg and "20x20" in msg
    with pytest.raises(AnnotationError, match=r"img1_detection\.mat"):
        ds.points(0)
    dropped = crchisto.dataset(tmp_path, "train", drop_outside=True)
    with pytest.warns(UserWarning, match=r"img1_detection\.mat: dropped 1 of 3 points"):
        s = dropped[0]
    assert s.points.xy.tolist() == [[0, 0], [4, 4]]


# ---------------------------------------------------------------------------------------
# BCData and SHIDC fixtures
# ---------------------------------------------------------------------------------------
def test_bcdata_fixture(tmp_path):
    for i in (0, 2, 10, 1):
        _image(tmp_path / "images" / "test" / f"{i}.png", 16, 16)
        _h5(tmp_path / "annotations" / "test" / "positive" / f"{i}.h5", [[i, 0]])
        _h5(tmp_path / "annotations" / "test" / "negative" / f"{i}.h5", [[0, i], [15, 15]])
    ds = bcdata.dataset(tmp_path)
    assert ds.ids() == ["0", "1", "2", "10"]
    assert ds.classes == ("positive", "negative")
    assert ds.counts() == {"positive": 4, "negative": 8}
    assert ds[3].points.of_class(0).xy.tolist() == [[10, 0]]
    assert datasets.splits("bcdata", tmp_path) == ["test"]
    with pytest.raises(ImageError) as e:
        bcdata.dataset(tmp_path, "train")
    assert "splits here: test" in _one_line(e)
    (tmp_path / "annotations" / "test" / "negative" / "2.h5").unlink()
    with pytest.raises(AnnotationError, match=r"negative[/\\]2\.h5: BCData annotation not found"):
        bcdata.dataset(tmp_path)


def test_shidc_fixture(tmp_path):
    d = tmp_path / "Train"
    for stem in ("p10", "p2"):
        _image(d / f"{stem}.jpg", 30, 30)
        (d / f"{stem}.json").write_text(json.dumps([{"x": 3, "y": 4, "label_id": 1}, {"x": 5, "y": 6, "label_id": 3}]))
    assert datasets.splits("shidc", tmp_path) == ["Train"]
    for split in ("Train", "train"):
        ds = shidc.dataset(tmp_path, split)
        assert ds.ids() == ["p2", "p10"] and ds.classes == ("positive", "negative", "til")
    assert shidc.dataset(d).counts() == {"positive": 2, "negative": 0, "til": 2}
    with pytest.raises(AnnotationError, match="splits here: Train"):
        shidc.dataset(tmp_path, "Test")
    _image(d / "p3.jpg", 30, 30)
    with pytest.raises(AnnotationError, match=r"p3\.jpg: no annotation p3\.json"):
        shidc.dataset(d)


# ---------------------------------------------------------------------------------------
# folder
# ---------------------------------------------------------------------------------------
def _folder_fixture(root):
    _image(root / "b.png", 40, 30)
    (root / "b.csv").write_text("x,y,label\n1,2,tumour\n3,4,stroma\n")
    _image(root / "a.tif", 40, 30)
    feats = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 6]}, "properties": {"classification": {"name": "immune"}}},
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [14, 10], [14, 14], [10, 14], [10, 10]]]},
            "properties": {"classification": {"name": "tumour"}},
        },
    ]
    (root / "a.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def test_folder_csv_and_geojson(tmp_path):
    _folder_fixture(tmp_path)
    ds = folder.dataset(tmp_path)
    assert ds.ids() == ["a", "b"]
    assert ds.classes == ("immune", "stroma", "tumour")  # union, sorted
    a, b = ds[0], ds[1]
    assert a.points.classes == b.points.classes == ds.classes
    assert a.points.xy.tolist() == [[5, 6], [12, 12]]
    assert [ds.classes[k] for k in a.points.labels] == ["immune", "tumour"]
    assert [ds.classes[k] for k in b.points.labels] == ["tumour", "stroma"]
    assert a.image.shape == (30, 40, 3)
    assert ds.counts() == {"immune": 1, "stroma": 1, "tumour": 2}
    given = folder.dataset(tmp_path, classes=("tumour", "stroma", "immune", "other"))
    assert given.classes == ("tumour", "stroma", "immune", "other")
    assert given.points(1).labels.tolist() == [0, 1]
    with pytest.raises(AnnotationError, match=r"'immune' is not a known class"):
        folder.dataset(tmp_path, classes=("tumour", "stroma")).points(0)


def test_folder_integer_labels_union(tmp_path):
    for stem, label in (("x", 10), ("y", 2)):
        _image(tmp_path / f"{stem}.png", 20, 20)
        (tmp_path / f"{stem}.csv").write_text(f"x,y,label\n1,1,{label}\n")
    ds = folder.dataset(tmp_path)
    assert ds.classes == ("class2", "class10")  # union of present names, natural order
    assert ds.points(0).labels.tolist() == [1] and ds.points(1).labels.tolist() == [0]


def test_folder_missing_annotation(tmp_path):
    _folder_fixture(tmp_path)
    _image(tmp_path / "c.jpg", 40, 30)
    _image(tmp_path / "d.bmp", 40, 30)
    with pytest.raises(AnnotationError) as e:
        folder.dataset(tmp_path)
    msg = _one_line(e)
    assert "c.jpg" in msg and "2 of 4 images" in msg
    with pytest.warns(UserWarning, match="2 of 4 images have no annotation file"):
        ds = folder.dataset(tmp_path, allow_missing=True)
    assert ds.ids() == ["a", "b", "c", "d"]
    assert len(ds[2].points) == 0 and ds[2].points.classes == ds.classes
    assert ds.classes == ("immune", "stroma", "tumour")


def test_folder_errors(tmp_path):
    with pytest.raises(ImageError, match="nothing.*not found"):
        folder.dataset(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ImageError) as e:
        folder.dataset(tmp_path)
    assert "no images" in _one_line(e) and "notes.txt" in str(e.value)
    _image(tmp_path / "a.png")
    (tmp_path / "a.csv").write_text("x,y\n1,1\n")
    (tmp_path / "a.geojson").write_text("[]")
    with pytest.raises(AnnotationError, match="several annotation files"):
        folder.dataset(tmp_path)
    (tmp_path / "a.geojson").unlink()
    _image(tmp_path / "a.jpg")
    with pytest.raises(ImageError, match="two images share the name"):
        folder.dataset(tmp_path)


def test_folder_unlabelled_and_empty(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "a.csv").write_text("x,y\n1,1\n2,2\n")
    _image(tmp_path / "b.png")
    (tmp_path / "b.csv").write_text("x,y,label\n")  # no points: adds no class
    ds = folder.dataset(tmp_path)
    assert ds.classes == ("tumour",) and [len(ds.points(i)) for i in range(2)] == [2, 0]
    assert folder.dataset(tmp_path, classes=("cell",)).points(0).classes == ("cell",)


# ---------------------------------------------------------------------------------------
# The dataset object, open_dataset, splits
# ---------------------------------------------------------------------------------------
def test_dataset_protocol(tmp_path):
    _folder_fixture(tmp_path)
    ds = folder.dataset(tmp_path)
    assert len(ds) == 2 and ds[-1].image_id == "b"
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(TypeError):
        ds["a"]
    assert [s.image_id for s in ds] == ["a", "b"]
    assert ds.index("b") == 1 and ds.image_size(1) == (40, 30)
    assert ds.annotation_path(0).name == "a.geojson"
    assert "2 images" in repr(ds)
    clone = pickle.loads(pickle.dumps(ds))  # goes to data-loader workers
    assert clone.ids() == ds.ids() and clone.points(1).xy.tolist() == ds.points(1).xy.tolist()


def test_dataset_from_items(tmp_path):
    _image(tmp_path / "im.png", 10, 10)
    item = datasets.Item("im", tmp_path / "im.png", tmp_path / "im.csv", lambda: Points.from_xy([[1, 1]], ("cell",)))
    ds = PointDataset([item], ("cell",))
    assert ds[0].points.xy.tolist() == [[1, 1]]
    with pytest.raises(AnnotationError, match="occurs twice"):
        PointDataset([item, item], ("cell",))


def test_open_dataset_and_splits(tmp_path):
    _authors_layout(tmp_path / "crc")
    assert datasets.open_dataset("crchisto", tmp_path / "crc").ids() == ["img1", "img2", "img10"]
    assert datasets.open_dataset("CRCHisto", tmp_path / "crc", mode="classes").classes == CRCHISTO_CLASSES
    _folder_fixture(tmp_path / "pts" / "train")
    assert datasets.open_dataset("folder", tmp_path / "pts", "train").ids() == ["a", "b"]
    assert datasets.splits("folder", tmp_path / "pts") == ["train"]
    with pytest.raises(AnnotationError, match="splits here: train"):
        datasets.open_dataset("folder", tmp_path / "pts", "test")
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        datasets.open_dataset("mnist", tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset"):
        datasets.splits("mnist", tmp_path)
    assert datasets.open_dataset("synthetic", None, "validation", n=2, size=64).ids() == ["syn0000", "syn0001"]
    with pytest.raises(SparsecellError, match="not found"):
        datasets.splits("bcdata", tmp_path / "missing")


# ---------------------------------------------------------------------------------------
# Real data (../shared/data)
# ---------------------------------------------------------------------------------------
def _shared(shared_data, name):
    root = shared_data / name
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    return root


@pytest.fixture(scope="module")
def crc_root(shared_data):
    return _shared(shared_data, "crchisto")


@pytest.fixture(scope="module")
def bc_root(shared_data):
    return _shared(shared_data, "bcdata")


@pytest.mark.realdata
def test_real_crchisto_counts(crc_root):
    assert datasets.splits("crchisto", crc_root) == ["train", "validation", "test"]
    expected = {"train": (70, 20232), "validation": (10, 2395), "test": (20, 7129)}
    for split, (n_images, n_points) in expected.items():
        ds = crchisto.dataset(crc_root, split)
        assert len(ds) == n_images
        assert ds.counts() == {"nucleus": n_points}
    every = crchisto.dataset(crc_root, "all")
    assert len(every) == 100 and every.counts() == {"nucleus": 29756}
    assert every.ids()[:12] == [f"img{i}" for i in range(1, 13)]
    assert len(set(every.ids())) == 100
    classes = crchisto.dataset(crc_root, None, mode="classes").counts()
    assert sum(classes.values()) == 22444
    assert classes["epithelial"] == 7722


@pytest.mark.realdata
def test_real_crchisto_points_inside(crc_root):
    ds = crchisto.dataset(crc_root, "all")
    lo, hi = np.inf, -np.inf
    for i in range(len(ds)):
        assert ds.image_size(i) == (500, 500)
        p = ds.points(i)  # raises if any point is outside
        assert p.inside(500, 500).all()
        lo, hi = min(lo, p.xy.min()), max(hi, p.xy.max())
    assert lo == 0.0 and hi == 499.0  # the clamped edge clicks and the 1-based 500s
    # the classified points are a subset of the marked nuclei, also inside
    cl = crchisto.dataset(crc_root, "test", mode="classes")
    for i in range(len(cl)):
        assert cl.points(i).inside(500, 500).all()


@pytest.mark.realdata
def test_real_crchisto_images_and_nuclei_are_dark(crc_root):
    ds = crchisto.dataset(crc_root, "test")
    at, swapped = [], []
    for s in ds:
        assert s.image.shape == (500, 500, 3) and s.image.dtype == np.uint8
        at.append(_window_mean(s.image, s.points.xy).mean(axis=1))
        swapped.append(_window_mean(s.image, s.points.xy[:, ::-1]).mean(axis=1))
    # haematoxylin nuclei are darker than the pixels at (y, x)
    assert np.concatenate(at).mean() < np.concatenate(swapped).mean() - 20


def _window_mean(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Mean RGB over the 3x3 window around each point (clipped at the border)."""
    h, w = image.shape[:2]
    padded = np.pad(image.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    cols = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1) + 1
    rows = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1) + 1
    total = np.zeros((len(xy), 3))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            total += padded[rows + dy, cols + dx]
    return total / 9.0


@pytest.mark.realdata
def test_real_bcdata(bc_root):
    assert datasets.splits("bcdata", bc_root) == ["test"]
    ds = bcdata.dataset(bc_root, "test")
    assert len(ds) == 26 and ds.ids() == [str(i) for i in range(26)]
    assert ds.counts() == {"positive": 1371, "negative": 1648}
    brown_at, brown_swapped = [], []
    for s in ds:
        assert s.image.shape == (640, 640, 3) and s.image.dtype == np.uint8
        assert s.points.inside(640, 640).all()
        pos = s.points.of_class(0).xy
        rgb, rgb_sw = _window_mean(s.image, pos), _window_mean(s.image, pos[:, ::-1])
        brown_at.append(rgb[:, 0] - rgb[:, 2])  # DAB brown: red above blue
        brown_swapped.append(rgb_sw[:, 0] - rgb_sw[:, 2])
    at, sw = np.concatenate(brown_at), np.concatenate(brown_swapped)
    assert len(at) == 1371
    assert at.mean() > sw.mean() + 5


@pytest.mark.realdata
def test_real_open_dataset(crc_root, bc_root):
    assert len(datasets.open_dataset("crchisto", crc_root, "validation")) == 10
    assert len(datasets.open_dataset("bcdata", bc_root)) == 26
    with pytest.raises(ImageError, match="splits here: test"):
        datasets.open_dataset("bcdata", bc_root, "train")
