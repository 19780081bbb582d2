"""Training from QuPath annotations on slides: windows, points, splits, and the loop
train -> predict on the slide."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slide_fixtures import write_svs
from sparsecell.errors import AnnotationError, ConfigError

pytest.importorskip("tiffslide")


def synthetic_slide(tmp_path, keep=0.5, seed=0, mpp=0.25):
    """A 2048 x 1024 px slide at 0.25 um/px: four synthetic Ki-67 tiles (512 px at 0.5
    um/px, upsampled 2x) on the left, glass on the right; a QuPath export with three
    training regions (a share of the cells clicked) and one exhaustive region."""
    from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_tile

    W0, H0 = 2048, 1024
    img = np.full((H0, W0, 3), 248, np.uint8)
    truth = []  # (x, y) level-0, class name
    for k in range(4):
        tile, pts = synthetic_tile(100 + k, SyntheticConfig(size=256))
        ox, oy = (k % 2) * 512, (k // 2) * 512
        img[oy:oy + 512, ox:ox + 512] = np.repeat(np.repeat(tile, 2, 0), 2, 1)
        for (x, y), lab in zip(pts.xy, pts.labels):
            truth.append((k, (x + 0.5) * 2 - 0.5 + ox, (y + 0.5) * 2 - 0.5 + oy, pts.classes[lab]))
    write_svs(tmp_path / "S1.svs", img, mpp=mpp)
    rng = np.random.default_rng(seed)
    feats = []
    for k in range(4):
        ox, oy = (k % 2) * 512, (k // 2) * 512
        ring = [[ox, oy], [ox + 512, oy], [ox + 512, oy + 512], [ox, oy + 512], [ox, oy]]
        cls = {"name": "Exhaustive", "color": [0, 0, 0]} if k == 3 else None
        props = {"objectType": "annotation", **({"classification": cls} if cls else {})}
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props})
        for name in ("positive", "negative"):
            xy = [[x, y] for kk, x, y, c in truth if kk == k and c == name and (k == 3 or rng.random() < keep)]
            if xy:
                feats.append({"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": xy},
                              "properties": {"objectType": "annotation",
                                             "classification": {"names": ["Tumor", name.capitalize()], "color": [1, 2, 3]}}})  # fmt: skip
    feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1500, 500]},  # on glass, outside every region
                  "properties": {"classification": {"name": "Tumor: Positive", "color": [1, 2, 3]}}})  # fmt: skip
    (tmp_path / "S1.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return truth


def test_slide_windows_carry_the_clicks_at_model_resolution(tmp_path):
    from sparsecell.datasets import open_dataset

    truth = synthetic_slide(tmp_path)
    with pytest.warns(UserWarning, match="1 clicked points lie outside every region"):
        train = open_dataset("slides", tmp_path, "train", mpp=0.5)
    val = open_dataset("slides", tmp_path, "validation", mpp=0.5)
    assert len(train) == 3 and len(val) == 1 and train.classes == ("positive", "negative")
    s = val[0]
    assert s.image.shape == (256, 256, 3)
    want = sorted((round((x + 0.5) / 2 - 0.5 - 256, 6), round((y + 0.5) / 2 - 0.5 - 256, 6), c) for k, x, y, c in truth if k == 3)
    got = sorted((round(x, 6), round(y, 6), s.points.classes[lab]) for (x, y), lab in zip(s.points.xy, s.points.labels))
    assert got == want  # every cell of the exhaustive region, at its model-px place and class
    from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_tile

    tile, _ = synthetic_tile(103, SyntheticConfig(size=256))
    assert np.abs(s.image.astype(int) - tile.astype(int)).max() <= 1  # read at 0.5 um/px: the tile again
    n_clicks = sum(len(train[i].points) for i in range(3))
    n_cells = sum(1 for k, *_ in truth if k < 3)
    assert 0.3 * n_cells < n_clicks < 0.7 * n_cells


def test_slide_data_errors(tmp_path):
    from sparsecell.config import load_config
    from sparsecell.datasets import open_dataset

    with pytest.raises(ConfigError, match="eval.mpp"):
        load_config(None, ["data.source=slides", f"data.root={tmp_path}"])
    with pytest.raises(AnnotationError, match="no slide with a QuPath GeoJSON"):
        open_dataset("slides", tmp_path, "train", mpp=0.5)
    synthetic_slide(tmp_path)
    doc = json.loads((tmp_path / "S1.geojson").read_text())
    for f in doc["features"]:
        if f["geometry"]["type"] == "MultiPoint":
            f["properties"]["classification"] = {"name": "Stroma", "color": [1, 1, 1]}
    (tmp_path / "S1.geojson").write_text(json.dumps(doc))
    ds = open_dataset("slides", tmp_path, "validation", mpp=0.5)
    with pytest.raises(AnnotationError, match="'Stroma' match none of the classes"):
        ds[0]


def test_a_slide_without_resolution_takes_it_from_mpp_csv(tmp_path):
    from sparsecell.datasets import open_dataset

    ref = tmp_path / "ref"
    ref.mkdir()
    synthetic_slide(ref)
    want = open_dataset("slides", ref, "validation", mpp=0.5)[0]
    synthetic_slide(tmp_path, mpp=None)
    with pytest.raises(AnnotationError, match=r"S1.svs: the slide records no resolution \(um per px\); give it in .*mpp.csv"):
        open_dataset("slides", tmp_path, "validation", mpp=0.5)
    csv = tmp_path / "mpp.csv"
    for text, err in [("name,um\nS1.svs,0.25\n", "first line must be the header 'slide,mpp'"),
                      ("slide,mpp\nS1.svs,30\n", "line 2: '30' is not a plausible resolution"),
                      ("slide,mpp\nS1.svs,abc\n", "line 2: 'abc' is not a plausible resolution"),
                      ("slide,mpp\nS1.svs,0.25\nS1.svs,0.25\n", "line 3: 'S1.svs' is given twice"),
                      ("slide,mpp\nS2.svs,0.25\n", "line 2: 'S2.svs' is none of the annotated slides")]:
        csv.write_text(text)
        with pytest.raises(AnnotationError, match=err):
            open_dataset("slides", tmp_path, "validation", mpp=0.5)
    csv.write_text("slide,mpp\nS1.svs,0.25\n")
    got = open_dataset("slides", tmp_path, "validation", mpp=0.5)[0]
    assert np.array_equal(got.image, want.image) and np.allclose(got.points.xy, want.points.xy)
    csv.write_text("slide,mpp\nS1.svs,0.5\n")  # a slide's own resolution is overridden, with a word
    synthetic_slide(tmp_path)
    with pytest.warns(UserWarning, match="mpp.csv gives 0.5 um/px; the file states 0.25; 0.5 is used"):
        assert open_dataset("slides", tmp_path, "validation", mpp=0.5)[0].image.shape == (512, 512, 3)


@pytest.mark.slow
def test_train_on_slides_then_predict_them(tmp_path):
    from sparsecell.config import load_config
    from sparsecell.inference.detector import Detector
    from sparsecell.slides.pipeline import SlideRun, predict_slides
    from sparsecell.training.loop import train

    (tmp_path / "slides").mkdir()
    truth = synthetic_slide(tmp_path / "slides")
    cfg = load_config(None, ["data.source=slides", f"data.root={tmp_path / 'slides'}", "eval.mpp=0.5", "data.crop=128",
                             "data.crops_per_image=16", "train.epochs=6", "train.batch_size=8", "train.lr=0.003",
                             "train.val_every=2", f"train.out_dir={tmp_path / 'run'}", "train.progress_bar=false"])  # fmt: skip
    with pytest.warns(UserWarning, match="outside every region"):
        r = train(cfg, quiet=True)
    det = Detector.from_checkpoint(r.best_checkpoint)
    assert det.eval.mpp == 0.5 and r.keep_estimate is not None
    [s] = predict_slides(det, [tmp_path / "slides" / "S1.svs"], tmp_path / "pred",
                         SlideRun(threshold=det.threshold, model_mpp=0.5, model_sha="0" * 64, progress=False), log=lambda m: None)  # fmt: skip
    assert s["tiles"]["total"] == 1  # 1024 x 512 px at the model's 0.5 um/px: one tile
    n = len(truth)
    assert 0.5 * n < s["cells"] < 1.5 * n, (s["cells"], n)  # a short training that learned to find the cells


def test_suggested_regions_clicked_through_are_complete_training_regions(tmp_path):
    """The annotate-next round trip: a square classed 'Annotate next' with clicks is a
    complete training region (the loss is told); one with no click yet is left out; the
    suggestion's proposed cells count only once reclassified."""
    from sparsecell.config import DataConfig
    from sparsecell.datasets import open_dataset
    from sparsecell.training.crops import sparse_annotations

    synthetic_slide(tmp_path)
    doc = json.loads((tmp_path / "S1.geojson").read_text())
    feats = doc["features"]
    square = lambda x, y, s: [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]  # noqa: E731
    for k, (x, y) in enumerate([(0, 0), (1250, 0)]):  # the first over clicks of tile 0, the second on glass
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square(x, y, 200)]},
                      "properties": {"objectType": "annotation", "name": f"Annotate next {k + 1}: uncertain",
                                     "classification": {"name": "Annotate next", "color": [230, 160, 0]}}})  # fmt: skip
    feats.append({"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1300, 100], [1350, 150]]},
                  "properties": {"objectType": "annotation",
                                 "classification": {"names": ["Annotate next", "check"], "color": [255, 220, 0]}}})  # fmt: skip
    # the square on glass holds only unconfirmed proposals: not clicked through yet
    (tmp_path / "S1.geojson").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="1 suggested region\\(s\\) \\(class 'Annotate next'\\) hold no click yet"):
        train = open_dataset("slides", tmp_path, "train", mpp=0.5)
    samples = [train[i] for i in range(len(train))]
    assert len(samples) == 4  # the three regions and the clicked-through square
    done = [s for s in samples if s.complete]
    assert len(done) == 1 and done[0].complete == ((0, 0, 100, 100),) and len(done[0].points) > 0
    points, regions = sparse_annotations(samples, DataConfig(source="slides", already_sparse=True))
    assert [len(r) for r in regions] == [1 if s.complete else 0 for s in samples]
    _, none = sparse_annotations(samples, DataConfig(source="slides", already_sparse=True, regions_known=False))
    assert none is None


def test_round0_without_a_click_learns_from_the_peers_labels(tmp_path):
    """Annotate next, round 0 with no click: training regions drawn but empty, one
    exhaustive region; --bootstrap classical fills the regions with the peer's cells."""
    from sparsecell.config import load_config
    from sparsecell.inference.detector import Detector, evaluate
    from sparsecell.datasets import open_dataset
    from sparsecell.training.loop import train

    (tmp_path / "slides").mkdir()
    synthetic_slide(tmp_path / "slides", keep=0.0)
    cfg = load_config(None, ["data.source=slides", f"data.root={tmp_path / 'slides'}", "eval.mpp=0.5", "data.crop=128",
                             "data.crops_per_image=16", "train.epochs=6", "train.batch_size=8", "train.lr=0.003",
                             "train.val_every=2", f"train.out_dir={tmp_path / 'run'}", "train.progress_bar=false",
                             "data.bootstrap=classical"])  # fmt: skip
    with pytest.warns(UserWarning, match="outside every region"):
        train_s = open_dataset("slides", tmp_path / "slides", "train", mpp=0.5)
        assert sum(len(train_s[i].points) for i in range(len(train_s))) == 0  # not a click in the training regions
        r = train(cfg, quiet=True)
    det = Detector.from_checkpoint(r.best_checkpoint)
    val = open_dataset("slides", tmp_path / "slides", "validation", mpp=0.5)
    f1 = evaluate(det, [val[0]]).as_dict()["all"]["f1"]
    assert f1 > 0.5, f1  # the model learned to find the cells from the peer's labels alone


def test_a_suggested_square_reclassified_is_an_ordinary_region_whatever_its_name(tmp_path):
    """Clicked only in part, a suggested square is reclassified by the user: its class
    decides, not the 'Annotate next' its name keeps, so it is not read as complete."""
    from sparsecell.datasets import open_dataset

    synthetic_slide(tmp_path)
    doc = json.loads((tmp_path / "S1.geojson").read_text())
    square = [[0, 0], [200, 0], [200, 200], [0, 200], [0, 0]]  # over clicks of tile 0
    for cls in ("Annotate next", "Region"):
        feats = doc["features"] + [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
                                    "properties": {"objectType": "annotation", "name": "Annotate next 1: uncertain",
                                                   "classification": {"name": cls, "color": [230, 160, 0]}}}]  # fmt: skip
        (tmp_path / "S1.geojson").write_text(json.dumps({**doc, "features": feats}))
        train = open_dataset("slides", tmp_path, "train", mpp=0.5)
        samples = [train[i] for i in range(len(train))]
        assert len(samples) == 4
        assert sum(bool(s.complete) for s in samples) == (1 if cls == "Annotate next" else 0), cls
