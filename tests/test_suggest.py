"""``sparsecell suggest`` on a synthetic slide, with a model that finds dark discs by
construction: QuPath shape of the suggestions, annotated regions never suggested,
bad inputs refused in one line with nothing written, no file replaced unasked."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from slide_fixtures import write_svs
from sparsecell.annotate.suggest import CHECK_CLASS, NEXT_CLASS, SuggestRun, suggest
from sparsecell.config import EvalConfig
from sparsecell.errors import ConfigError, SlideError
from sparsecell.formats.qupath import check_qupath_shape, read_regions
from sparsecell.inference.detector import Detector
from sparsecell.models.detector import DetectorOutput

pytest.importorskip("tiffslide")

TISSUE, GLASS, BLUE = (232, 204, 222), (250, 250, 250), (60, 70, 170)


class DiscModel(nn.Module):
    """Foreground = local darkness (undecided for faint discs); embedding = pooled colour."""

    stride = 16

    def forward(self, x):
        rgb = (x + 1) / 2
        dark = nn.functional.avg_pool2d(1 - rgb.mean(1, keepdim=True), 5, 1, 2)
        fg = 12 * (dark - 0.25)
        logits = torch.cat([torch.zeros_like(fg), fg], 1)
        return DetectorOutput(logits, nn.functional.avg_pool2d(rgb, 16))


def detector():
    return Detector(DiscModel(), ("tumor",), 0.5, EvalConfig(min_distance=6, peak_mode="foreground", mpp=0.5))


def slide_image(rng, w=1600, h=1200):
    """Tissue on the left 3/4 with discs: dark ones on the top half, faint ones below."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = GLASS
    img[:, : 3 * w // 4] = TISSUE
    yy, xx = np.mgrid[:h, :w]
    for _ in range(160):
        x, y = int(rng.integers(10, 3 * w // 4 - 10)), int(rng.integers(10, h - 10))
        colour = BLUE if y < h // 2 else (196, 178, 200)  # faint: right at the threshold
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = colour
    return img


@pytest.fixture
def slide(tmp_path):
    path = tmp_path / "slides" / "S1.svs"
    path.parent.mkdir()
    write_svs(path, slide_image(np.random.default_rng(0)), mpp=0.25)  # the model reads it at 0.5 um/px
    return path


def test_suggestions_are_qupath_regions_off_the_annotated_ones(slide, tmp_path):
    annotated = [[0, 0], [400, 0], [400, 400], [0, 400], [0, 0]]  # level-0 px: 100 um a side at 0.25 um/px
    (slide.parent / "S1.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [annotated]},
         "properties": {"objectType": "annotation", "classification": {"name": "Exhaustive"}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [50, 50]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}}]}))  # fmt: skip
    out = tmp_path / "next"
    rows = suggest(detector(), [slide], out, SuggestRun(regions=4, size_um=50, cells=True), log=lambda m: None)
    assert len(rows) == 4
    doc = json.loads((out / "S1.geojson").read_text())
    regions = [f for f in doc["features"] if f["geometry"]["type"] == "Polygon"]
    assert len(regions) == 4
    for f in doc["features"]:
        assert check_qupath_shape(f) == []
    for f in regions:
        p = f["properties"]
        assert p["classification"]["name"] == NEXT_CLASS and p["name"].startswith(f"{NEXT_CLASS} ")
        ring = np.array(f["geometry"]["coordinates"][0])
        x0, y0 = ring.min(0)
        x1, y1 = ring.max(0)
        assert x1 - x0 == pytest.approx(200) and y1 - y0 == pytest.approx(200)  # 50 um at 0.25 um/px
        assert x0 >= 400 or y0 >= 400  # never over the annotated square
        assert x1 <= 1200  # on tissue (the right quarter is glass)
    ranks = sorted(f["properties"]["measurements"]["Annotate next rank"] for f in regions)
    assert ranks == [1, 2, 3, 4]
    for pts in (f for f in doc["features"] if f["geometry"]["type"] == "MultiPoint"):
        assert pts["properties"]["classification"]["names"] == [p.strip() for p in CHECK_CLASS.split(":")]
    assert len(read_regions(out / "S1.geojson")) == 4  # QuPath's reader (ours) takes it back
    with open(out / "suggestions.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in table] == [1, 2, 3, 4] and {r["slide"] for r in table} == {"S1"}
    assert (out / "S1_suggestions.png").stat().st_size > 1000
    # nothing replaced unasked; with --overwrite, the same suggestions again
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        suggest(detector(), [slide], out, SuggestRun(regions=4, size_um=50), log=lambda m: None)
    again = suggest(detector(), [slide], out, SuggestRun(regions=4, size_um=50, overwrite=True), log=lambda m: None)
    assert [r["box0"] for r in again] == [r["box0"] for r in rows]


def test_uncertain_strategy_goes_where_the_model_is_undecided(slide, tmp_path):
    rows = suggest(detector(), [slide], tmp_path / "u", SuggestRun(regions=3, size_um=50, strategy="uncertain"), log=lambda m: None)
    assert all(r["box0"][1] >= 600 for r in rows)  # the faint discs' half
    dense = suggest(detector(), [slide], tmp_path / "d", SuggestRun(regions=3, size_um=50, strategy="densest"), log=lambda m: None)
    assert all(r["box0"][3] <= 600 for r in dense)  # the dark discs' half


def test_bad_requests_are_one_line_and_write_nothing(slide, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(SlideError, match="S1.svs: 500 regions asked for, but only \\d+ squares"):
        suggest(detector(), [slide], out, SuggestRun(regions=500, size_um=50), log=lambda m: None)
    with pytest.raises(SlideError, match="S1.svs: a 1000 um square .* larger than the slide"):
        suggest(detector(), [slide], out, SuggestRun(regions=1, size_um=1000), log=lambda m: None)
    glass = tmp_path / "glass" / "G.svs"
    glass.parent.mkdir()
    write_svs(glass, np.full((800, 800, 3), 250, np.uint8), mpp=0.25)
    with pytest.raises(SlideError, match="G.svs: no tissue found"):
        suggest(detector(), [slide, glass], out, SuggestRun(regions=2, size_um=50), log=lambda m: None)
    assert not out.exists()  # the good slide's files were not written either


def test_cli_refuses_an_onnx_model(tmp_path, capsys):
    from sparsecell.cli import main

    (tmp_path / "m.onnx").write_bytes(b"x")
    assert main(["suggest", str(tmp_path / "m.onnx"), str(tmp_path), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert "m.onnx: an ONNX export; suggest needs the .ckpt" in err and len(err.strip().splitlines()) == 1
