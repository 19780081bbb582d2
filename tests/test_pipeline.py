"""The training-data pipeline end to end: augmentation, crops and targets, tensors,
simulated sparsity, the dataset sources and the node energy of a (tiny) model.

Kept fast: no training, only one forward pass of a tiny model.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecell.config import DataConfig, load_config
from sparsecell.models.inputs import pad_to_multiple, to_tensor
from sparsecell.training.crops import CropDataset, augment, sparse_points
from sparsecell.datasets import (
    Sample,
    detect_source,
    load_samples,
    open_dataset,
    splits,
)
from sparsecell.errors import ConfigError
from sparsecell.formats.points import Points, write_csv
from sparsecell.training.targets import node_labels

CLASSES = ("positive", "negative")


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def position_image(H: int, W: int) -> np.ndarray:
    """(H, W, 3) uint8 whose pixel (r, c) holds (r, c, 7): its own position."""
    assert H < 256 and W < 256
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = np.arange(H, dtype=np.uint8)[:, None]
    img[..., 1] = np.arange(W, dtype=np.uint8)[None, :]
    img[..., 2] = 7
    return img


def decode(t: torch.Tensor) -> np.ndarray:
    """The uint8 (H, W, 3) image back from a to_tensor (3, H, W) tensor."""
    return np.rint((t.numpy() + 1.0) * 127.5).astype(np.int64).transpose(1, 2, 0)


def random_points(rng: np.random.Generator, n: int, H: int, W: int, num_classes: int = 2) -> Points:
    """n distinct integral points inside an H x W image, random classes."""
    flat = rng.choice(H * W, size=n, replace=False)
    xy = np.stack([flat % W, flat // W], axis=1).astype(np.float64)
    return Points(xy, rng.integers(num_classes, size=n), CLASSES[:num_classes] if num_classes <= 2 else
                  tuple(f"c{i}" for i in range(num_classes)))  # fmt: skip


# ---------------------------------------------------------------------------------------
# 1. augment
# ---------------------------------------------------------------------------------------
@st.composite
def crops_with_points(draw):
    H = draw(st.integers(8, 40))
    W = draw(st.integers(8, 40))
    n = draw(st.integers(0, 12))
    xs = draw(st.lists(st.integers(0, W - 1), min_size=n, max_size=n))
    ys = draw(st.lists(st.integers(0, H - 1), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    pts = Points(np.array([xs, ys], np.float64).T.reshape(-1, 2), np.array(labels, np.int64), CLASSES)
    return H, W, pts


@settings(max_examples=80, deadline=None)
@given(crops_with_points(), st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_augment_points_stay_on_their_pixel(case, seed, flips, rot90):
    H, W, pts = case
    img = position_image(H, W)
    before = img.copy()
    out, moved = augment(img, pts, np.random.default_rng(seed), flips=flips, rot90=rot90, colour_jitter=0.0)
    np.testing.assert_array_equal(img, before)  # input untouched
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[:2] in ((H, W), (W, H))
    if not rot90:
        assert out.shape[:2] == (H, W)
    # the pixels are a permutation of the input's: every position occurs exactly once
    assert sorted(map(tuple, out[..., :2].reshape(-1, 2).tolist())) == sorted(
        map(tuple, img[..., :2].reshape(-1, 2).tolist())
    )
    np.testing.assert_array_equal(moved.labels, pts.labels)
    assert moved.classes == pts.classes
    assert len(moved) == len(pts)
    # integral in, integral out; every point lands inside and on its own cell
    np.testing.assert_array_equal(moved.xy, np.round(moved.xy))
    h2, w2 = out.shape[:2]
    assert moved.inside(w2, h2).all()
    for (x, y), (x0, y0) in zip(moved.xy.astype(int), pts.xy.astype(int)):
        assert tuple(out[y, x, :2]) == (y0, x0)


@settings(max_examples=30, deadline=None)
@given(crops_with_points(), st.integers(0, 2**32 - 1))
def test_augment_without_flips_or_rotations_is_identity(case, seed):
    H, W, pts = case
    img = position_image(H, W)
    out, moved = augment(img, pts, np.random.default_rng(seed), flips=False, rot90=False, colour_jitter=0.0)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(moved.xy, pts.xy)
    np.testing.assert_array_equal(moved.labels, pts.labels)
    assert moved.classes == pts.classes


def test_augment_colour_jitter_changes_colours_not_geometry():
    img = np.random.default_rng(0).integers(30, 220, size=(24, 31, 3), dtype=np.uint8)
    pts = random_points(np.random.default_rng(1), 6, 24, 31)
    plain, p_plain = augment(img, pts, np.random.default_rng(5), colour_jitter=0.0)
    jit, p_jit = augment(img, pts, np.random.default_rng(5), colour_jitter=0.3)
    assert jit.shape == plain.shape and jit.dtype == np.uint8
    np.testing.assert_array_equal(p_jit.xy, p_plain.xy)  # same geometry from the same rng
    assert np.abs(jit.astype(int) - plain.astype(int)).max() > 0  # but other colours


def test_augment_covers_all_eight_orientations():
    """Over many seeds, flips + rot90 reach each of the 8 symmetries of a square."""
    img = position_image(5, 5)
    seen = set()
    for seed in range(200):
        out, _ = augment(img, Points.empty(CLASSES), np.random.default_rng(seed))
        seen.add(out.tobytes())
    assert len(seen) == 8


# ---------------------------------------------------------------------------------------
# 2. CropDataset
# ---------------------------------------------------------------------------------------
def _dataset(H=100, W=120, n_points=30, crop=32, stride=16, sigma=2.0, **kw):
    img = position_image(H, W)
    pts = random_points(np.random.default_rng(3), n_points, H, W)
    return img, pts, CropDataset([img], [pts], crop=crop, stride=stride, sigma=sigma, **kw)


def test_crop_dataset_shapes_and_types():
    _, _, ds = _dataset(crops_per_image=3)
    assert len(ds) == 3
    x, target, labelled, _ = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert target.shape == (3, 32, 32) and target.dtype == torch.float32
    assert labelled.shape == (2, 2, 2) and labelled.dtype == torch.bool
    # channel 0 is 1 - max of the class channels
    torch.testing.assert_close(target[0], 1.0 - target[1:].max(0).values)


def test_crop_dataset_length_counts_every_image():
    imgs = [position_image(40, 40), position_image(50, 45)]
    imgs[1][..., 2] = 9
    pts = [Points.empty(CLASSES), Points.empty(CLASSES)]
    ds = CropDataset(imgs, pts, crop=32, stride=16, sigma=2.0, crops_per_image=5)
    assert len(ds) == 10
    # item i crops image i % 2: the crop's pixels come from that image's extent
    for i in range(len(ds)):
        x = decode(ds[i][0])
        np.testing.assert_array_equal(x[..., 2], 7 if i % 2 == 0 else 9)


def test_crop_dataset_reproducible_per_seed_epoch_index():
    _, _, ds1 = _dataset(seed=11)
    _, _, ds2 = _dataset(seed=11)
    for i in range(len(ds1)):
        *tensors, extras = ds1[i]
        *tensors2, extras2 = ds2[i]
        assert extras == extras2 == {}
        for a, b in zip(tensors, tensors2):
            assert torch.equal(a, b)
    before = [ds1[i][0] for i in range(len(ds1))]
    ds1.set_epoch(1)
    after = [ds1[i][0] for i in range(len(ds1))]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    ds1.set_epoch(0)
    assert all(torch.equal(a, ds1[i][0]) for i, a in enumerate(before))
    # another seed, other crops
    _, _, ds3 = _dataset(seed=12)
    assert any(not torch.equal(ds3[i][0], before[i]) for i in range(len(ds3)))


@pytest.mark.parametrize("augmented", [False, True])
def test_crop_dataset_target_peaks_at_the_crop_points(augmented):
    H, W, c, s = 100, 120, 32, 16
    img, pts, ds = _dataset(H, W, n_points=40, crop=c, stride=s, crops_per_image=6, seed=4,
                            flips=augmented, rot90=augmented, colour_jitter=0.0)  # fmt: skip
    total = 0
    for i in range(len(ds)):
        x, target, labelled, _ = ds[i]
        crop = decode(x)
        r0, c0 = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        if not augmented:  # an exact window of the image
            np.testing.assert_array_equal(crop, img[r0:r0 + c, c0:c0 + c])
        rows, cols = crop[..., 0], crop[..., 1]
        y_lo, x_lo = rows.min(), cols.min()
        assert rows.max() - y_lo == c - 1 and cols.max() - x_lo == c - 1
        inside = (pts.xy[:, 0] >= x_lo) & (pts.xy[:, 0] < x_lo + c) & (pts.xy[:, 1] >= y_lo) & (pts.xy[:, 1] < y_lo + c)
        peaks = target[1:].numpy() > 0.99
        assert int(peaks.sum()) == int(inside.sum())
        total += int(inside.sum())
        # every peak is on a pixel that holds a point of its class
        want = {(int(y), int(x), int(k)) for (x, y), k in zip(pts.xy[inside], pts.labels[inside])}
        got = {(int(crop[r, q, 0]), int(crop[r, q, 1]), int(k)) for k, r, q in zip(*np.nonzero(peaks))}
        assert got == want
        # the peak value is exactly 1 (integral points at pixel centres)
        assert np.all(target[1:].numpy()[peaks] == 1.0)
        # labelled nodes: the grid cells of the crop's points, in crop coordinates
        ks, rs, qs = np.nonzero(peaks)
        local = Points(np.c_[qs, rs].astype(float), ks, CLASSES)
        np.testing.assert_array_equal(labelled.numpy(), node_labels(local, (c, c), s))
    assert total > 0  # some crop held points


@pytest.mark.parametrize("H, W", [(20, 24), (20, 50), (50, 7), (1, 1)])
def test_crop_dataset_pads_small_images(H, W):
    img = position_image(H, W)
    pts = Points(np.array([[W - 1, H - 1], [0, 0]], float), [0, 1], CLASSES)
    ds = CropDataset([img], [pts], crop=32, stride=16, sigma=2.0, flips=False, rot90=False, crops_per_image=2)
    for i in range(len(ds)):
        x, target, labelled, _ = ds[i]
        assert x.shape == (3, 32, 32) and target.shape == (3, 32, 32) and labelled.shape == (2, 2, 2)
        crop = decode(x)
        if H <= 32 and W <= 32:
            np.testing.assert_array_equal(crop[:H, :W], img)  # the image sits top-left
            assert target[1, H - 1, W - 1] == 1.0 and target[2, 0, 0] == 1.0
            assert labelled[0, (H - 1) // 16, (W - 1) // 16] and labelled[1, 0, 0]
        # padding repeats image pixels only
        assert crop[..., 0].max() < H and crop[..., 1].max() < W
        assert crop[..., 0].max() == min(H, 32) - 1 or H > 32


def test_crop_dataset_crop_not_multiple_of_stride_is_config_error():
    with pytest.raises(ConfigError, match="stride"):
        CropDataset([position_image(40, 40)], [Points.empty(CLASSES)], crop=40, stride=16, sigma=2.0)


def test_crop_dataset_mismatched_inputs_are_config_errors():
    with pytest.raises(ConfigError):
        CropDataset([position_image(40, 40)], [], crop=32, stride=16, sigma=2.0)
    with pytest.raises(ConfigError):
        CropDataset([], [], crop=32, stride=16, sigma=2.0)


# ---------------------------------------------------------------------------------------
# 3. to_tensor, pad_to_multiple
# ---------------------------------------------------------------------------------------
def test_to_tensor_maps_0_255_to_minus_one_one():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    img[..., 1] = 255 - img[..., 0]
    t = to_tensor(img)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert t[0, 0, 0].item() == -1.0 and t[0, 15, 15].item() == 1.0
    assert t[1, 0, 0].item() == 1.0 and t[1, 15, 15].item() == -1.0
    np.testing.assert_allclose(t.numpy(), img.transpose(2, 0, 1) / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(decode(t), img)


def test_to_tensor_read_only_and_non_contiguous_input():
    img = np.random.default_rng(0).integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    ro = img.copy()
    ro.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = to_tensor(ro)
        t2 = to_tensor(img[::-1, ::2])  # a non-contiguous view
    np.testing.assert_array_equal(ro, img)  # not modified
    np.testing.assert_array_equal(decode(t), img)
    np.testing.assert_array_equal(decode(t2), img[::-1, ::2])
    t.zero_()  # the tensor does not share the input's memory
    np.testing.assert_array_equal(ro, img)


@pytest.mark.parametrize("H, W, stride", [(17, 30, 16), (5, 40, 16), (33, 1, 8), (1, 1, 16), (31, 31, 32)])
def test_pad_to_multiple(H, W, stride):
    x = torch.randn(2, 3, H, W)
    y = pad_to_multiple(x, stride)
    Hp, Wp = -(-H // stride) * stride, -(-W // stride) * stride
    assert y.shape == (2, 3, Hp, Wp)
    assert torch.equal(y[..., :H, :W], x)
    if Hp - H < H and Wp - W < W:  # reflection: row H + k mirrors row H - 2 - k
        for k in range(Hp - H):
            assert torch.equal(y[..., H + k, :W], x[..., H - 2 - k, :])
    else:  # replicate: padding repeats the last row / column
        assert torch.equal(y[..., H:, :W], x[..., H - 1:H, :].expand(2, 3, Hp - H, W))
        assert torch.equal(y[..., :H, W:], x[..., :, W - 1:W].expand(2, 3, H, Wp - W))


def test_pad_to_multiple_unbatched_and_already_multiple():
    x = torch.randn(3, 32, 48)
    assert pad_to_multiple(x, 16) is x
    y = pad_to_multiple(torch.randn(3, 1, 1), 16)
    assert y.shape == (3, 16, 16)
    assert torch.equal(y, y[:, :1, :1].expand(3, 16, 16))


# ---------------------------------------------------------------------------------------
# 4. sparse_points
# ---------------------------------------------------------------------------------------
def _samples(counts=((15, 25), (7, 30), (0, 11))) -> list[Sample]:
    rng = np.random.default_rng(8)
    out = []
    for i, (n0, n1) in enumerate(counts):
        n = n0 + n1
        pts = random_points(rng, n, 64, 64)
        pts = Points(pts.xy, np.r_[np.zeros(n0, int), np.ones(n1, int)], CLASSES)
        out.append(Sample(np.zeros((64, 64, 3), np.uint8), pts, f"s{i}"))
    return out


def _same(a: Points, b: Points) -> bool:
    return a.classes == b.classes and np.array_equal(a.xy, b.xy) and np.array_equal(a.labels, b.labels)


def _is_ordered_subset(sub: Points, full: Points) -> bool:
    keys = [tuple(r) for r in np.c_[full.xy, full.labels]]
    pos = [keys.index(tuple(r)) for r in np.c_[sub.xy, sub.labels]]
    return pos == sorted(pos) and len(set(pos)) == len(pos)


@pytest.mark.parametrize("cfg", [DataConfig(keep=1.0), DataConfig(keep=0.1, already_sparse=True)])
def test_sparse_points_keep_all(cfg):
    samples = _samples()
    out = sparse_points(samples, cfg)
    assert len(out) == len(samples)
    assert all(_same(o, s.points) for o, s in zip(out, samples))


def test_sparse_points_keeps_a_fraction_reproducibly():
    samples = _samples()
    a = sparse_points(samples, DataConfig(keep=0.25, sparse_seed=0))
    b = sparse_points(samples, DataConfig(keep=0.25, sparse_seed=0))
    c = sparse_points(samples, DataConfig(keep=0.25, sparse_seed=1))
    for s, pa, pb in zip(samples, a, b):
        assert len(pa) == round(0.25 * len(s.points))
        assert _is_ordered_subset(pa, s.points)
        assert _same(pa, pb)
    assert not all(_same(pa, pc) for pa, pc in zip(a, c))
    assert not _same(a[0], c[0])  # 10 of 40: equal by chance with p = 1 / C(40, 10)


def test_sparse_points_differ_between_identical_images():
    pts = _samples()[0].points
    samples = [Sample(np.zeros((64, 64, 3), np.uint8), pts, f"s{i}") for i in range(2)]
    a, b = sparse_points(samples, DataConfig(keep=0.25))
    assert len(a) == len(b) == 10
    assert not _same(a, b)  # each image has its own seed


def test_sparse_points_per_class():
    samples = _samples()
    out = sparse_points(samples, DataConfig(keep=0.3, per_class=True, sparse_seed=3))
    for s, p in zip(samples, out):
        for c in range(2):
            n_c = int((s.points.labels == c).sum())
            assert int((p.labels == c).sum()) == round(0.3 * n_c)
        assert _is_ordered_subset(p, s.points)


# ---------------------------------------------------------------------------------------
# 5. datasets
# ---------------------------------------------------------------------------------------
def _assert_same_samples(ds, reference):
    assert len(ds) == len(reference)
    for i, (img, pts, sid) in enumerate(reference):
        s = ds[i]
        assert s.image_id == sid
        np.testing.assert_array_equal(s.image, img)
        assert _same(s.points, pts)


def test_open_synthetic_equals_synthetic_dataset():
    from sparsecell.datasets import synthetic as syn_source
    from sparsecell.datasets.synthetic_tiles import TUMOUR_CLASSES, SyntheticConfig, synthetic_dataset

    assert syn_source.CLASSES == TUMOUR_CLASSES
    cfg = SyntheticConfig(size=64)
    train = open_dataset("synthetic", None, "train", n=3, size=64, seed=0)
    assert train.classes == ("positive", "negative")
    assert train.ids() == ["syn0000", "syn0001", "syn0002"]
    _assert_same_samples(train, synthetic_dataset(3, seed=0, config=cfg))
    _assert_same_samples(open_dataset("synthetic", None, "validation", n=2, size=64, seed=5),
                         synthetic_dataset(2, seed=6, config=cfg))  # fmt: skip
    _assert_same_samples(open_dataset("synthetic", None, "test", n=2, size=64, seed=5),
                         synthetic_dataset(2, seed=7, config=cfg))  # fmt: skip
    # default split is train
    _assert_same_samples(open_dataset("synthetic", None, n=1, size=64, seed=0), synthetic_dataset(1, seed=0, config=cfg))
    assert splits("synthetic") == ["train", "validation", "test"]


def test_open_dataset_errors(tmp_path):
    with pytest.raises(ConfigError, match="split"):
        open_dataset("synthetic", None, "valid", n=1, size=64)
    with pytest.raises(ConfigError, match="nope"):
        open_dataset("nope", tmp_path)
    with pytest.raises(ConfigError, match="mode"):
        open_dataset("bcdata", tmp_path, mode="classes")
    with pytest.raises(ConfigError):
        open_dataset("bcdata", None)
    # an option set to None is no error
    assert len(open_dataset("synthetic", None, "train", n=1, size=64, mode=None)) == 1


def test_load_samples_synthetic_counts():
    cfg = load_config(None, ["data.synthetic_train=3", "data.synthetic_val=2", "data.synthetic_size=64",
                             "data.synthetic_seed=4"])  # fmt: skip
    train, val, classes = load_samples(cfg)
    assert classes == ("positive", "negative")
    assert [s.image_id for s in train] == ["syn0000", "syn0001", "syn0002"]
    assert [s.image_id for s in val] == ["syn0000", "syn0001"]
    assert all(s.image.shape == (64, 64, 3) for s in train + val)
    from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_dataset

    ref = synthetic_dataset(2, seed=5, config=SyntheticConfig(size=64))
    for s, (img, pts, _) in zip(val, ref):
        np.testing.assert_array_equal(s.image, img)
        assert _same(s.points, pts)


def _write_folder(root, names=("img_a", "img_b", "img_c")):
    from sparsecell.report import save_png

    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    written = {}
    for k, name in enumerate(names):
        img = rng.integers(0, 256, size=(20 + k, 24, 3), dtype=np.uint8)
        pts = Points(rng.integers(0, 20, size=(4, 2)).astype(float), [0, 1, 1, k % 2], CLASSES)
        save_png(img, root / f"{name}.png")
        write_csv(pts, root / f"{name}.csv")
        written[name] = (img, pts)
    return written


def test_load_samples_folder_val_ids(tmp_path):
    written = _write_folder(tmp_path / "data" / "train")
    cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path / 'data'}", "data.val_ids=[img_b]"])
    train, val, classes = load_samples(cfg)
    assert [s.image_id for s in train] == ["img_a", "img_c"]
    assert [s.image_id for s in val] == ["img_b"]
    assert classes == ("negative", "positive")  # the union of the files' names, sorted
    for s in train + val:
        img, pts = written[s.image_id]
        np.testing.assert_array_equal(s.image, img)
        assert _same(s.points, pts.with_classes(classes))
    # train_ids restricts training
    cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path / 'data'}", "data.val_ids=img_b",
                             "data.train_ids=[img_c]"])  # fmt: skip
    train, val, _ = load_samples(cfg)
    assert [s.image_id for s in train] == ["img_c"] and [s.image_id for s in val] == ["img_b"]


def test_load_samples_unknown_val_ids(tmp_path):
    _write_folder(tmp_path / "data" / "train")
    cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path / 'data'}", "data.val_ids=[img_b,ghost7]"])
    with pytest.raises(ConfigError, match="ghost7"):
        load_samples(cfg)


def test_detect_source(tmp_path):
    bc = tmp_path / "bc"
    (bc / "images" / "train").mkdir(parents=True)
    (bc / "annotations" / "train").mkdir(parents=True)
    assert detect_source(bc) == "bcdata"

    crc = tmp_path / "crc"
    (crc / "img1").mkdir(parents=True)
    (crc / "img1" / "img1_detection.mat").write_bytes(b"")
    assert detect_source(crc) == "crchisto"
    (tmp_path / "crc_splits" / "train" / "img3").mkdir(parents=True)
    (tmp_path / "crc_splits" / "train" / "img3" / "img3_detection.mat").write_bytes(b"")
    assert detect_source(tmp_path / "crc_splits") == "crchisto"

    sh = tmp_path / "shidc"
    sh.mkdir()
    (sh / "p1.jpg").write_bytes(b"")
    (sh / "p1.json").write_text(SHIDC_JSON)
    assert detect_source(sh) == "shidc"
    qp = tmp_path / "qupath_json"  # QuPath's .json exports (GeoJSON) are a folder source, not SHIDC
    qp.mkdir()
    (qp / "t1.png").write_bytes(b"")
    (qp / "t1.json").write_text('{"type": "FeatureCollection", "features": []}')
    assert detect_source(qp) == "folder"

    for name, suffix in (("csvs", ".csv"), ("geo", ".geojson")):
        d = tmp_path / name
        d.mkdir()
        (d / "t1.png").write_bytes(b"")
        (d / f"t1{suffix}").write_text("")
        assert detect_source(d) == "folder"
    # .geojson beside .json: a QuPath folder, not SHIDC
    (tmp_path / "geo" / "t2.json").write_text("[]")
    assert detect_source(tmp_path / "geo") == "folder"


SHIDC_JSON = '[{"x": 1, "y": 2, "label_id": 1}]'


def test_detect_source_shidc_with_split_folders(tmp_path):
    for split in ("Train", "Test"):
        d = tmp_path / "shidc" / split
        d.mkdir(parents=True)
        (d / "p1.jpg").write_bytes(b"")
        (d / "p1.json").write_text(SHIDC_JSON)
    from sparsecell.datasets import shidc

    assert shidc.splits(tmp_path / "shidc") == ["Train", "Test"]
    assert detect_source(tmp_path / "shidc") == "shidc"


# ---------------------------------------------------------------------------------------
# 6. node_energy
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector():
    from sparsecell.inference.detector import Detector
    from sparsecell.models import build_model

    torch.manual_seed(0)
    model = build_model("vig_cpu", 2, dim=32, depth=2)
    assert model.stride == 16
    return Detector(model, CLASSES, 0.5)


def _expected_node_energy(detector, image, points) -> np.ndarray:
    """Node energies (C, h, w) computed here from the model's embedding, by the paper's formula."""
    x = pad_to_multiple(to_tensor(image)[None], 16)
    with torch.no_grad():
        emb = detector.model(x).embedding[0].double().numpy()  # (D, h, w)
    D, h, w = emb.shape
    unit = emb.reshape(D, -1)
    unit = unit / np.linalg.norm(unit, axis=0, keepdims=True)
    lab = node_labels(points, tuple(x.shape[-2:]), 16).reshape(2, -1)
    any_lab = lab.any(0)
    e = np.ones((2, h * w))
    for c in range(2):
        if lab[c].any():
            mean_cos = (unit[:, lab[c]].mean(1) @ unit)
            e[c] = np.where(any_lab, 1.0, 1.0 - (1.0 + mean_cos) / 2.0)
    return e.reshape(2, h, w)


def test_node_energy_shape_range_and_labelled_cells(detector):
    from sparsecell.training.energy import node_energy

    H, W = 60, 45  # padded to 64 x 48: a 4 x 3 grid
    image = np.random.default_rng(0).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    # class 0 labels the 3 x 3 block of nodes rows 0-2, columns 0-2 except (1, 1), which class 1 labels
    xy = [[16 * j + 5, 16 * i + 9] for i in range(3) for j in range(3)]
    labels = [1 if (i, j) == (1, 1) else 0 for i in range(3) for j in range(3)]
    pts = Points(np.array(xy, float), labels, CLASSES)
    e = node_energy(detector, image, pts)
    assert e.shape == (H, W)
    assert e.min() >= 0.0 and e.max() <= 1.0
    # the cell of node (1, 1) and its neighbours are labelled: the whole cell is 1
    np.testing.assert_array_equal(e[16:32, 16:32], 1.0)
    # the top-left 8 x 8 corner reads node (0, 0) alone (bilinear, clamped): labelled, 1
    np.testing.assert_array_equal(e[:8, :8], 1.0)
    # the bottom-left corner reads node (3, 0) alone: unlabelled, its background energy
    # is the smaller class energy computed from the embedding
    want = _expected_node_energy(detector, image, pts).min(0)
    assert want[3, 0] < 1.0 - 1e-3
    np.testing.assert_allclose(e[56:60, :8], want[3, 0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(e[56:60, 40:45], want[3, 2], rtol=0, atol=1e-5)


def test_node_energy_all_or_no_nodes_labelled(detector):
    from sparsecell.training.energy import node_energy

    H, W = 40, 50  # 48 x 64 padded: 3 x 4 grid
    image = np.random.default_rng(1).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    e = node_energy(detector, image, Points.empty(CLASSES))
    assert e.shape == (H, W)
    np.testing.assert_array_equal(e, 1.0)
    # a point in every grid cell that the image covers
    xy = [[min(16 * j + 3, W - 1), min(16 * i + 3, H - 1)] for i in range(3) for j in range(4)]
    pts = Points(np.array(xy, float), [k % 2 for k in range(12)], CLASSES)
    np.testing.assert_array_equal(node_energy(detector, image, pts), 1.0)
    # points given in another class order are relabelled by name
    flipped = Points(pts.xy, 1 - pts.labels, CLASSES[::-1])
    np.testing.assert_array_equal(node_energy(detector, image, flipped), 1.0)


def test_large_images_are_predicted_tile_by_tile_with_bounded_windows(monkeypatch):
    from sparsecell.inference.detector import Detector
    from sparsecell.models import build_model

    torch.manual_seed(0)
    det = Detector(build_model("vig_cpu", 2, dim=32, depth=2), ("positive", "negative"), 0.5)
    det.tile, det.halo = 96, 16
    windows = []
    real = det._heatmap

    def spy(image):
        windows.append(image.shape[:2])
        return real(image)

    monkeypatch.setattr(det, "_heatmap", spy)
    img = np.random.default_rng(0).integers(0, 255, (230, 150, 3), dtype=np.uint8)
    heat = det.heatmap(img)
    assert heat.shape == (3, 230, 150) and np.isfinite(heat).all()
    assert max(max(w) for w in windows) <= 96 and len(windows) == 4 * 3  # cores of 64 px: 4 rows x 3 columns
    np.testing.assert_allclose(heat.sum(0), 1.0, atol=1e-5)  # every pixel written, by exactly one tile
    # each core equals that window's own prediction
    window = img[64 - 16:128 + 16, 64 - 16:128 + 16]
    np.testing.assert_allclose(heat[:, 64:128, 64:128], real(window)[:, 16:80, 16:80], atol=1e-6)
