"""Whole slides end to end, with a model that finds dark discs by construction (so
every check is about the pipeline: resolution, tissue, seams, counts, outputs)."""

from __future__ import annotations

import csv
import gzip
import json
import uuid

import numpy as np
import pytest
import torch
from torch import nn

from slide_fixtures import write_svs
from sparsecell.config import EvalConfig
from sparsecell.inference.detector import Detector
from sparsecell.models.detector import DetectorOutput
from sparsecell.slides.pipeline import SlideRun, predict_slides, write_cohort

pytest.importorskip("tiffslide")

BROWN, BLUE, TISSUE, GLASS = (140, 80, 40), (60, 70, 170), (232, 204, 222), (250, 250, 250)


class BlobModel(nn.Module):
    """Cell logit = blurred darkness; positive where red exceeds blue (DAB), negative else."""

    stride = 16

    def __init__(self, sigma: float = 2.0):
        super().__init__()
        r = int(3 * sigma)
        k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
        self.register_buffer("k", (k / k.sum()))

    def forward(self, x):  # (B, 3, H, W) normalised to [-1, 1]
        rgb = (x + 1) / 2
        dark = 1 - rgb.mean(1, keepdim=True)
        r = len(self.k) // 2
        d = nn.functional.conv2d(nn.functional.pad(dark, (r, r, 0, 0), mode="replicate"), self.k.view(1, 1, 1, -1))
        d = nn.functional.conv2d(nn.functional.pad(d, (0, 0, r, r), mode="replicate"), self.k.view(1, 1, -1, 1))
        fg = 10 * (d - 0.3)  # gentle: a saturated softmax would make plateaus
        hue = 8 * (rgb[:, :1] - rgb[:, 2:3])
        logits = torch.cat([torch.zeros_like(fg), fg + hue, fg - hue], 1)
        B, _, H, W = x.shape
        return DetectorOutput(logits, torch.zeros(B, 1, H // 16, W // 16))


def blob_detector(tile=256, halo=32, threshold=0.5):
    det = Detector(BlobModel(), ("positive", "negative"), threshold, EvalConfig(min_distance=6, peak_mode="foreground"))
    det.tile, det.halo = tile, halo
    return det


def plant(width, height, cells, scale=1, radius=5):
    """Tissue on the left half, glass on the right; discs at model px (x, y, positive)."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = GLASS
    img[:, : width // 2] = TISSUE
    yy, xx = np.mgrid[:height, :width]
    for x, y, p in cells:  # level-0 centre of model px (x, y): (x + 0.5) * scale - 0.5
        X, Y = (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5
        img[(xx - X) ** 2 + (yy - Y) ** 2 <= (radius * scale) ** 2] = BROWN if p else BLUE
    return img


def seam_cells(rng, core=192, width=768, height=640, n=60):
    """Cells on every seam crossing and along seams, and random ones, 14 px apart at least, on the tissue half."""
    cells = [(core, core, 1), (2 * core, core, 0), (core, 2 * core, 1), (core - 1, core + 40, 0),
             (core + 30, 2 * core - 1, 1), (2 * core, 2 * core + 50, 0), (8, 8, 1)]  # fmt: skip
    while len(cells) < n:
        x, y = int(rng.integers(8, width // 2 - 8)), int(rng.integers(8, height - 8))
        if all(max(abs(x - a), abs(y - b)) > 14 for a, b, _ in cells):
            cells.append((x, y, int(rng.random() < 0.4)))
    return [c for c in cells if c[0] < width // 2 - 6]


def read_cells(folder):
    with gzip.open(folder / "cells.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r["x"]), float(r["y"])] for r in rows]), [r["class"] for r in rows]


def run_of(**kw):
    base = dict(threshold=0.5, model_mpp=0.25, model_sha="f" * 64, progress=False)
    return SlideRun(**{**base, **kw})


@pytest.mark.parametrize("scale", [1, 2])
def test_every_planted_cell_is_found_once_at_its_level0_place(tmp_path, scale):
    rng = np.random.default_rng(scale)
    cells = seam_cells(rng)
    img = plant(768 * scale, 640 * scale, cells, scale)
    write_svs(tmp_path / "s.svs", img, mpp=0.25)
    det = blob_detector()
    [summary] = predict_slides(det, [tmp_path / "s.svs"], tmp_path / "out", run_of(model_mpp=0.25 * scale), log=lambda m: None)
    xy, cls = read_cells(tmp_path / "out" / "s")
    truth = np.array([((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5) for x, y, _ in cells])
    d = np.hypot(xy[:, None, 0] - truth[None, :, 0], xy[:, None, 1] - truth[None, :, 1])
    assert len(xy) == len(cells), (len(xy), len(cells))
    assert (d.min(1) <= 0.5 * scale + 1e-6).all()  # each found cell at a planted place
    assert sorted(d.argmin(1).tolist()) == list(range(len(cells)))  # each planted cell once
    want = {"positive": sum(p for *_, p in cells), "negative": sum(1 - p for *_, p in cells)}
    assert summary["counts"] == want
    assert summary["ki67_index"] == pytest.approx(want["positive"] / len(cells))
    assert summary["tiles"]["run"] < summary["tiles"]["total"]  # the glass half was skipped
    assert summary["slide_mpp"] == 0.25 and summary["model_mpp"] == 0.25 * scale
    assert any("fewer than 500" in w for w in summary["warnings"])


def test_the_index_interval_takes_the_models_validation_error_and_warns_at_a_cut_off(tmp_path):
    from sparsecell.slides.ki67 import index_interval

    cells = seam_cells(np.random.default_rng(1))
    write_svs(tmp_path / "s.svs", plant(768, 640, cells), mpp=0.25)
    [narrow] = predict_slides(blob_detector(), [tmp_path / "s.svs"], tmp_path / "a", run_of(), log=lambda m: None)
    [wide] = predict_slides(blob_detector(), [tmp_path / "s.svs"], tmp_path / "b", run_of(index_error=40.0), log=lambda m: None)
    assert wide["ki67_index"] == narrow["ki67_index"]
    assert wide["ki67_index_ci"] == index_interval(wide["positive"], wide["negative"], 40.0)[0]
    assert wide["ki67_index_ci"][0] < narrow["ki67_index_ci"][0] and wide["ki67_index_ci"][1] > narrow["ki67_index_ci"][1]
    assert "RMS 40.0" in wide["ki67_index_ci_basis"]
    assert wide["ki67_crosses_cutoff"] and any("cut-off" in w for w in wide["warnings"])


def test_the_pipeline_equals_the_detector_on_the_same_pixels(tmp_path):
    rng = np.random.default_rng(5)
    cells = seam_cells(rng)
    img = plant(768, 640, cells)
    img[:, 384:] = TISSUE  # all tissue, so no tile is skipped
    write_svs(tmp_path / "s.svs", img, mpp=0.25)
    det = blob_detector()
    predict_slides(det, [tmp_path / "s.svs"], tmp_path / "out", run_of(batch_size=3), log=lambda m: None)
    xy, cls = read_cells(tmp_path / "out" / "s")
    ref = det.predict(img)
    order = np.lexsort((xy[:, 1], xy[:, 0]))
    rorder = np.lexsort((ref.xy[:, 1], ref.xy[:, 0]))
    np.testing.assert_allclose(xy[order], ref.xy[rorder], atol=0.006)
    assert [cls[i] for i in order] == [ref.classes[k] for k in ref.labels[rorder]]


def test_outputs_import_into_qupath_and_reruns_skip(tmp_path):
    from sparsecell.formats.qupath import check_qupath_shape

    cells = seam_cells(np.random.default_rng(0))
    write_svs(tmp_path / "a.svs", plant(768, 640, cells), mpp=0.25)
    write_svs(tmp_path / "b.svs", plant(768, 640, cells[:20]), mpp=0.25)
    det = blob_detector()
    out = tmp_path / "out"
    predict_slides(det, [tmp_path / "a.svs", tmp_path / "b.svs"], out, run_of(), log=lambda m: None)
    with gzip.open(out / "a" / "cells.geojson.gz", "rt") as f:
        doc = json.load(f)
    feats = [f for f in doc["features"] if f["properties"]["objectType"] == "detection"]
    assert len(feats) == len(cells)
    for f in feats:
        assert check_qupath_shape(f) == []
        assert f["properties"]["classification"]["names"] in (["Tumor", "Positive"], ["Tumor", "Negative"])
        uuid.UUID(f["id"])
    ids_a = {f["id"] for f in feats}
    with gzip.open(out / "b" / "cells.geojson.gz", "rt") as f:
        ids_b = {g["id"] for g in json.load(f)["features"]}
    assert not ids_a & ids_b  # two slides never share an id
    assert {p.name for p in (out / "a").iterdir()} == {"cells.geojson.gz", "cells.csv.gz", "overview.png", "summary.json"}
    write_cohort(out)
    with open(out / "cohort.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "b"] and int(rows[1]["cells"]) == 20
    # each index with its 95% interval (the count alone: this detector records no validation error)
    from sparsecell.slides.ki67 import index_interval

    sa = json.loads((out / "a" / "summary.json").read_text())
    ci, crossed = index_interval(sa["positive"], sa["negative"])
    assert sa["ki67_index_ci"] == ci and ci[0] < sa["ki67_index"] < ci[1] and sa["ki67_crosses_cutoff"] == crossed
    assert "cell count only" in sa["ki67_index_ci_basis"]
    assert [float(rows[0]["ki67_index_ci_low"]), float(rows[0]["ki67_index_ci_high"])] == ci
    assert rows[0]["ki67_crosses_cutoff"] == " ".join(f"{c:.0%}" for c in crossed)
    # a rerun skips both; another threshold is refused without overwrite
    seen = []
    predict_slides(det, [tmp_path / "a.svs", tmp_path / "b.svs"], out, run_of(), log=seen.append)
    assert all("skipped" in m for m in seen)
    from sparsecell.errors import SparsecellError

    with pytest.raises(SparsecellError, match="another model or threshold"):
        predict_slides(det, [tmp_path / "a.svs"], out, run_of(threshold=0.6), log=lambda m: None)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_roi_restricts_the_counts(tmp_path):
    from sparsecell.formats.qupath import read_regions

    cells = seam_cells(np.random.default_rng(1))
    write_svs(tmp_path / "s.svs", plant(768, 640, cells), mpp=0.25)
    roi = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [200, 300], [0, 300], [0, 0]]]},
           "properties": {"objectType": "annotation", "name": "field 1"}}  # fmt: skip
    (tmp_path / "roi.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [roi]}))
    det = blob_detector()
    [s] = predict_slides(det, [tmp_path / "s.svs"], tmp_path / "out", run_of(rois=read_regions(tmp_path / "roi.geojson")),
                         log=lambda m: None)  # fmt: skip
    inside = [c for c in cells if c[0] < 200 and c[1] < 300]
    assert s["cells"] == len(inside) and s["rois"][0]["cells"] == len(inside)
    assert s["rois"][0]["ki67_index"] == pytest.approx(sum(p for *_, p in inside) / len(inside))


def test_slide_errors_leave_no_output(tmp_path):
    from slide_fixtures import corrupt_tile

    from sparsecell.errors import SlideError

    cells = seam_cells(np.random.default_rng(2))
    write_svs(tmp_path / "nompp.svs", plant(768, 640, cells), mpp=None)
    det = blob_detector()
    out = tmp_path / "out"
    with pytest.raises(SlideError, match="no resolution.*--mpp"):
        predict_slides(det, [tmp_path / "nompp.svs"], out, run_of(), log=lambda m: None)
    [s] = predict_slides(det, [tmp_path / "nompp.svs"], out, run_of(mpp=0.25), log=lambda m: None)
    assert s["slide_mpp_source"] == "override" and s["cells"] == len(cells)
    write_svs(tmp_path / "bad.svs", plant(768, 640, cells), mpp=0.25, tile=128)
    corrupt_tile(tmp_path / "bad.svs", page=0, tile_index=7)
    with pytest.raises(SlideError) as e:
        predict_slides(det, [tmp_path / "bad.svs"], out, run_of(), log=lambda m: None)
    assert "bad.svs" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in out.iterdir()) == [".failed-bad.json", "nompp"]  # nothing of the failed slide but its record
    write_cohort(out)
    with open(out / "cohort.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert rows["nompp"]["status"] == "ok" and rows["bad"]["status"].startswith(f"failed: {tmp_path / 'bad.svs'}: ")
    assert rows["bad"]["cells"] == ""


def test_tile_reading_workers_give_the_same_cells(tmp_path):
    cells = seam_cells(np.random.default_rng(3))
    write_svs(tmp_path / "s.svs", plant(768, 640, cells), mpp=0.25)
    det = blob_detector()
    got = []
    for workers in (0, 2):
        predict_slides(det, [tmp_path / "s.svs"], tmp_path / f"w{workers}", run_of(num_workers=workers, batch_size=2), log=lambda m: None)
        got.append(read_cells(tmp_path / f"w{workers}" / "s"))
    np.testing.assert_array_equal(np.sort(got[0][0], axis=0), np.sort(got[1][0], axis=0))


def test_a_folder_of_the_users_is_never_replaced_without_overwrite(tmp_path):
    from sparsecell.errors import SparsecellError

    cells = seam_cells(np.random.default_rng(4))[:10]
    write_svs(tmp_path / "s.svs", plant(768, 640, cells), mpp=0.25)
    mine = tmp_path / "out" / "s"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(SparsecellError, match="not a finished sparsecell slide folder"):
        predict_slides(blob_detector(), [tmp_path / "s.svs"], tmp_path / "out", run_of(), log=lambda m: None)
    assert (mine / "notes.txt").read_text() == "my notes"


def test_cells_on_glass_are_not_counted_nor_written(tmp_path):
    """Dark grey specks (dust) on the glass of tiles that hold tissue: the model finds them,
    the tissue mask drops them from the counts, the outputs and the density."""
    cells = seam_cells(np.random.default_rng(6))
    img = plant(768, 640, cells)
    yy, xx = np.mgrid[:640, :768]
    dust = [(x, y) for x in (420, 470, 530) for y in (60, 250, 430, 600)]  # in the tiles of column 2, which run
    for x, y in dust:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 25] = (90, 90, 90)
    write_svs(tmp_path / "s.svs", img, mpp=0.25)
    det = blob_detector()
    [on] = predict_slides(det, [tmp_path / "s.svs"], tmp_path / "on", run_of(), log=lambda m: None)
    [off] = predict_slides(det, [tmp_path / "s.svs"], tmp_path / "off", run_of(tissue=False), log=lambda m: None)
    assert off["cells"] == len(cells) + len(dust)  # the model does report them (and --no-tissue keeps them)
    assert on["cells"] == len(cells) and on["tiles"]["run"] < on["tiles"]["total"]
    xy, _ = read_cells(tmp_path / "on" / "s")
    assert len(xy) == len(cells) and xy[:, 0].max() < 384
    with gzip.open(tmp_path / "on" / "s" / "cells.geojson.gz", "rt") as f:
        feats = [g for g in json.load(f)["features"] if g["properties"]["objectType"] == "detection"]
    assert len(feats) == len(cells)
    assert on["tissue_mm2"] == pytest.approx(384 * 640 * 0.25**2 / 1e6, rel=0.05)  # the tissue half
    assert on["cells_per_mm2"] == pytest.approx(on["cells"] / on["tissue_mm2"])
    assert off["tissue_mm2"] is None and off["cells_per_mm2"] == pytest.approx(off["cells"] / (768 * 640 * 0.25**2 / 1e6))


def test_roi_density_is_over_its_tissue(tmp_path):
    from sparsecell.formats.qupath import read_regions

    cells = seam_cells(np.random.default_rng(7))
    write_svs(tmp_path / "s.svs", plant(768, 640, cells), mpp=0.25)
    roi = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[192, 0], [576, 0], [576, 640], [192, 640], [192, 0]]]},
           "properties": {"objectType": "annotation", "name": "half on glass"}}  # fmt: skip
    (tmp_path / "roi.geojson").write_text(json.dumps(roi))
    [s] = predict_slides(blob_detector(), [tmp_path / "s.svs"], tmp_path / "out",
                         run_of(rois=read_regions(tmp_path / "roi.geojson")), log=lambda m: None)  # fmt: skip
    r = s["rois"][0]
    assert r["area_mm2"] == pytest.approx(384 * 640 * 0.25**2 / 1e6)
    assert r["tissue_mm2"] == pytest.approx(r["area_mm2"] / 2, rel=0.05)  # half of it is glass
    assert s["cells_per_mm2"] == pytest.approx(s["cells"] / r["tissue_mm2"]) and r["cells_per_mm2"] == pytest.approx(s["cells_per_mm2"])


def test_hotspot_density_is_over_the_tissue_in_its_field(tmp_path, monkeypatch):
    import sparsecell.slides.ki67 as ki67

    monkeypatch.setattr(ki67, "MIN_CELLS", 5)
    cells = seam_cells(np.random.default_rng(8))
    write_svs(tmp_path / "s.svs", plant(768, 640, cells), mpp=0.25)
    [s] = predict_slides(blob_detector(), [tmp_path / "s.svs"], tmp_path / "out", run_of(hotspot_um=100.0), log=lambda m: None)
    hot = s["hotspot"]  # a 400 px field; the tissue is 384 px wide, so every field holds some glass
    assert hot["x1"] - hot["x0"] == 400 and hot["total"] >= 5
    assert 0.2 * 0.01 < hot["tissue_mm2"] < 0.98 * 0.01
    assert hot["cells_per_mm2"] == pytest.approx(hot["total"] / hot["tissue_mm2"])


def test_reading_workers_follow_the_cpu_count():
    from sparsecell.slides.pipeline import SlideRun, default_workers

    assert [default_workers(n) for n in (1, 2, 3, 4, 8, 16, 64)] == [0, 0, 1, 1, 2, 4, 4]
    assert SlideRun(threshold=0.5, model_mpp=0.5, model_sha="0").num_workers == default_workers()
