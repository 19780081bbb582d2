"""The classical peer (colour deconvolution and a DAB threshold): finds the planted
nuclei and their classes, is fitted on validation only, runs through predict and
evaluate as a model does; its settings files fail in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from slide_fixtures import write_svs
from sparsecell.classical import (
    ClassicalSettings,
    by_dab,
    classical_detector,
    dab_at,
    fit_classical,
    fit_dab_threshold,
    read_classical,
    write_classical,
)
from sparsecell.cli import main
from sparsecell.datasets.base import Sample
from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_dataset
from sparsecell.errors import CheckpointError
from sparsecell.report import save_png
from sparsecell.formats.points import Points, write_csv
from sparsecell.inference.detector import evaluate
from sparsecell.metrics import score_points

# tumour nuclei only: the peer cannot tell a lymphocyte or a stromal nucleus from a tumour one (that is its
# weakness on real slides too), so the tiles hold only the cells it is asked to find
CFG = SyntheticConfig(size=256, stain_jitter=0.0, lymphocytes=(0, 0), stromal=(0, 0))


def samples(n: int, seed: int) -> list[Sample]:
    return [Sample(img, pts, name) for img, pts, name in synthetic_dataset(n, seed, CFG)]


@pytest.fixture(scope="module")
def fitted():
    val = samples(3, seed=11)
    return fit_classical(val, val[0].points.classes, radius=6.0, mpp=0.5)


def test_the_peer_finds_the_planted_nuclei_and_their_classes(fitted):
    settings, report = fitted
    assert settings.stains == "hdab" and settings.classes == ("positive", "negative")
    assert 3.0 <= settings.nucleus_um <= 7.0  # the planted nuclei are 9 px across at 0.5 um/px: 4.5 um
    test = samples(3, seed=12)
    ev = evaluate(classical_detector(settings), test)
    assert ev.all.f1 > 0.6, ev.as_dict()["all"]  # measured 0.68 (positive 0.79, negative 0.60)
    assert ev.scores["positive"].f1 > 0.7 and ev.scores["negative"].f1 > 0.5
    assert ev.ki67 is not None and ev.ki67.mae < 15.0  # measured 10.7 points; the planted index is 20-60%
    # the heatmap path (what predict and the slide pipeline run) scores validation as the fit measured it
    val_ev = evaluate(classical_detector(settings), samples(3, seed=11))
    assert val_ev.all.f1 == pytest.approx(report["validation_f1"], abs=0.02)


def test_one_class_fits_haematoxylin_alone():
    one = [Sample(s.image, Points(s.points.xy, np.zeros(len(s.points), np.int64), ("nucleus",)), s.image_id)
           for s in samples(2, seed=3)]  # fmt: skip
    settings, report = fit_classical(one, ("nucleus",), radius=6.0)
    assert settings.stains == "he" and settings.classes == ("nucleus",)
    assert report["validation_f1"] > 0.5
    pts = classical_detector(settings).predict(one[0].image)
    assert pts.classes == ("nucleus",) and len(pts) > 10


def test_fitting_reads_only_the_images_it_is_given(tmp_path):
    """The CLI fit opens the validation split alone: a test split of unreadable files does not matter."""
    root = tmp_path / "data"
    for split in ("validation", "test"):
        (root / split).mkdir(parents=True)
    for s in samples(2, seed=5):
        save_png(s.image, root / "validation" / f"{s.image_id}.png")
        write_csv(s.points, root / "validation" / f"{s.image_id}.csv")
    (root / "test" / "t0.png").write_bytes(b"not an image")
    (root / "test" / "t0.csv").write_text("x,y,class\n1,1,positive\n")
    out = tmp_path / "classical.json"
    assert main(["fit-classical", str(root), "--source", "folder", "--split", "validation", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "sparsecell-classical"
    assert sorted(doc["fit"]["validation_images"]) == sorted(s.image_id for s in samples(2, seed=5))
    assert set(read_classical(out).classes) == {"positive", "negative"}
    # no overwrite unless asked
    assert main(["fit-classical", str(root), "--source", "folder", "--split", "validation", "--out", str(out)]) == 2


def test_settings_files_fail_in_one_line(tmp_path, fitted):
    from sparsecell.classical import read_index_error

    p = write_classical(tmp_path / "c.json", fitted[0])
    assert read_classical(p) == fitted[0]
    assert read_index_error(p) is None  # written without the fit's report
    settings, report = fitted
    # the fit's validation index error, as evaluate measures it at the fitted settings, travels in the file
    val = samples(3, seed=11)
    agree = evaluate(classical_detector(settings), val).ki67
    assert report["validation_ki67"]["rmse"] == pytest.approx(agree.rmse, abs=1.0)
    q = write_classical(tmp_path / "fit.json", settings, report)
    assert read_index_error(q) == report["validation_ki67"]["rmse"]
    with pytest.raises(Exception, match="exists"):
        write_classical(p, fitted[0])
    for text, msg in [("{", "not a readable JSON"), ('{"format": "other"}', "not a sparsecell classical settings"),
                      ('{"format": "sparsecell-classical", "settings": {"size": 3}}', "unknown settings"),
                      ('{"format": "sparsecell-classical", "settings": {"nucleus_um": -1}}', "nucleus_um")]:  # fmt: skip
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(CheckpointError, match=msg) as e:
            read_classical(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="not found"):
        read_classical(tmp_path / "missing.json")


def test_dab_positivity_relabels_by_the_measured_density(fitted):
    settings, _ = fitted
    val = samples(2, seed=11)
    det = classical_detector(settings)
    pts = [det.peaks(s.image, det.threshold) for s in val]
    dabs = [dab_at(s.image, p.xy, settings.nucleus_px) for s, p in zip(val, pts)]
    t, f1 = fit_dab_threshold([s.points for s in val], pts, dabs, 6.0)
    relabelled = [by_dab(p, d, t) for p, d in zip(pts, dabs)]
    assert score_points([s.points for s in val], relabelled, 6.0)["all"].f1 == pytest.approx(f1)
    assert all((r.labels == r.classes.index("positive")).sum() == (d > t).sum() for r, d in zip(relabelled, dabs))


def test_predict_classical_on_images_and_a_slide(tmp_path, capsys):
    s = samples(1, seed=2)[0]
    img = tmp_path / "tile.png"
    save_png(s.image, img)
    out = tmp_path / "pred"
    assert main(["predict", "--classical", str(img), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "tile.csv", "tile.geojson", "tile_overlay.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"].startswith("classical") and summary["images"]["tile"]["cells"] > 0
    from sparsecell.slides.ki67 import index_interval

    t = summary["images"]["tile"]
    P, N = t["counts"]["positive"], t["counts"]["negative"]
    assert t["ki67_index_ci"] == index_interval(P, N)[0] and "cell count only" in summary["ki67_index_ci_basis"]
    assert main(["predict", "--classical", str(img), "--out", str(tmp_path / "wide"), "--ki67-error", "5"]) == 0
    wide = json.loads((tmp_path / "wide" / "summary.json").read_text())
    assert wide["images"]["tile"]["ki67_index_ci"] == index_interval(P, N, 5.0)[0]
    # a fitted settings file runs as the model, on a slide through the slide pipeline
    settings = replace(ClassicalSettings(), mpp=0.5, nucleus_um=4.5, response_scale=0.02, dab_threshold=0.05)
    cfile = write_classical(tmp_path / "c.json", settings)
    (tmp_path / "slides").mkdir()
    slide = write_svs(tmp_path / "slides" / "S0.svs", np.tile(s.image, (2, 2, 1)), mpp=0.5)
    sout = tmp_path / "slides_out"
    assert main(["predict", str(cfile), str(slide), "--out", str(sout)]) == 0
    names = sorted(p.name for p in (sout / "S0").iterdir())
    assert {"cells.geojson.gz", "cells.csv.gz", "summary.json"} <= set(names)
    sj = json.loads((sout / "S0" / "summary.json").read_text())
    assert sj["cells"] > 0 and sj["model_mpp"] == 0.5 and sj["ki67_index"] is not None
    assert main(["predict", "--out", str(tmp_path / "x"), str(cfile)]) == 2  # a model and no input
    assert "at least one image" in capsys.readouterr().err


def test_evaluate_prints_the_index_error(tmp_path, capsys, fitted):
    root = tmp_path / "data" / "test"
    root.mkdir(parents=True)
    for s in samples(2, seed=12):
        save_png(s.image, root / f"{s.image_id}.png")
        write_csv(s.points, root / f"{s.image_id}.csv")
    cfile = write_classical(tmp_path / "c.json", fitted[0])
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(cfile), str(tmp_path / "data"), "--source", "folder", "--split", "test",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Ki-67 index over 2 images" in printed and "limits of agreement" in printed
    res = json.loads(out.read_text())
    assert res["ki67"]["n_images"] == 2 and len(res["ki67"]["errors"]) == 2
