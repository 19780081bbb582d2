"""ONNX export: onnxruntime's heatmaps match PyTorch's, and the pipelines run it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY
from sparsecell.config import load_config
from sparsecell.training.loop import train

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from sparsecell.inference.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx")
    ck = train(load_config(None, TINY + ["eval.mpp=0.5", f"train.out_dir={out / 'run'}"]), quiet=True).best_checkpoint
    return ck, export_onnx(ck, out / "model.onnx", example_side=128)


def test_onnx_heatmaps_match_pytorch(exported):
    from sparsecell.inference.onnx import ONNX_TOLERANCE
    from sparsecell.inference.detector import Detector
    from sparsecell.inference.load import load_detector

    ck, onnx_path = exported
    torch_det, onnx_det = Detector.from_checkpoint(ck, device="cpu"), load_detector(onnx_path)
    assert onnx_det.classes == torch_det.classes and onnx_det.threshold == torch_det.threshold
    assert onnx_det.eval == torch_det.eval
    rng = np.random.default_rng(0)
    for h, w in [(128, 128), (96, 160), (75, 130)]:  # other sides than the example, and a padded one
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        a, b = torch_det.heatmap(img), onnx_det.heatmap(img)
        assert a.shape == b.shape == (3, h, w)
        assert np.abs(a - b).max() < ONNX_TOLERANCE


def test_the_slide_pipeline_runs_the_onnx_model(exported, tmp_path):
    from slide_fixtures import blob_image, write_svs

    from sparsecell.inference.detector import Detector
    from sparsecell.inference.load import load_detector
    from sparsecell.slides.pipeline import SlideRun, predict_slides

    ck, onnx_path = exported
    write_svs(tmp_path / "s.svs", blob_image(600, 500), mpp=0.5)
    got = {}
    for name, det in (("torch", Detector.from_checkpoint(ck, device="cpu")), ("onnx", load_detector(onnx_path))):
        det.tile, det.halo = 256, 32
        [s] = predict_slides(det, [tmp_path / "s.svs"], tmp_path / name, SlideRun(0.3, 0.5, "0" * 64, progress=False),
                             log=lambda m: None)  # fmt: skip
        got[name] = _cells(tmp_path / name / "s" / "cells.csv.gz")
    # The heatmaps agree to 1e-4 (above), but this one-epoch model's maps are nearly flat,
    # and a near-tie between neighbouring pixels or classes may break either way: so the
    # same cells up to a few such breaks, not bit for bit.
    from scipy.spatial import cKDTree

    t, o = got["torch"], got["onnx"]
    assert len(t) > 100 and abs(len(t) - len(o)) <= 0.01 * len(t)
    for a, b in ((t, o), (o, t)):
        dist, _ = cKDTree(b).query(a)
        assert np.mean(dist <= 6) >= 0.99


def test_export_refuses_to_overwrite(exported):
    from sparsecell.errors import SparsecellError
    from sparsecell.inference.onnx import export_onnx

    ck, onnx_path = exported
    with pytest.raises(SparsecellError, match="exists"):
        export_onnx(ck, onnx_path)


def test_export_and_predict_from_the_command_line(exported, tmp_path, capsys):
    from slide_fixtures import blob_image, write_svs

    from sparsecell.cli import main

    ck, _ = exported
    out = tmp_path / "m.onnx"
    assert main(["export", str(ck), str(out)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    write_svs(tmp_path / "s.svs", blob_image(300, 260), mpp=0.5)
    assert main(["predict", str(out), str(tmp_path / "s.svs"), "--out", str(tmp_path / "res"), "--quiet"]) == 0
    assert (tmp_path / "res" / "s" / "summary.json").is_file() and (tmp_path / "res" / "cohort.csv").is_file()
    assert main(["export", str(ck), str(out)]) == 2  # exists: refused without --overwrite
    assert "exists" in capsys.readouterr().err


def _cells(path):
    import csv
    import gzip

    with gzip.open(path, "rt", newline="") as f:
        return np.array([(float(r["x"]), float(r["y"])) for r in csv.DictReader(f)])


def test_load_detector_exports_once_and_caches_beside_the_checkpoint(exported, tmp_path):
    import shutil

    from sparsecell.inference.load import load_detector, onnx_cache_path

    ck = tmp_path / "best.ckpt"
    shutil.copy(exported[0], ck)
    heard = []
    det = load_detector(ck, "cpu", "auto", log=heard.append)
    cached = onnx_cache_path(ck)
    assert det.engine == "onnx" and cached.is_file() and cached.parent == ck.parent
    assert cached.name.startswith("best.") and len(cached.suffixes[0]) == 17  # best.<16 hex>.onnx
    assert len(heard) == 1 and "exporting" in heard[0]
    stamp = cached.stat().st_mtime_ns
    again = load_detector(ck, "cpu", "onnx", log=heard.append)
    assert again.engine == "onnx" and len(heard) == 1 and cached.stat().st_mtime_ns == stamp  # the cache, not a new export
    assert load_detector(ck, "cpu", "torch").engine == "torch"
    with open(ck, "ab") as f:  # another checkpoint (here: the same one with a byte more) gets its own export
        f.write(b"\0")
    assert onnx_cache_path(ck) != cached


def test_load_detector_refuses_what_cannot_run(exported):
    from sparsecell.errors import ConfigError
    from sparsecell.inference.load import load_detector

    with pytest.raises(ConfigError, match="runs with onnxruntime"):
        load_detector(exported[1], "cpu", "torch")
    with pytest.raises(ConfigError, match="not known"):
        load_detector(exported[0], "cpu", "tensorrt")


def test_predict_says_which_engine_ran(exported, tmp_path, capsys):
    import shutil

    from PIL import Image

    from sparsecell.cli import main

    ck = tmp_path / "best.ckpt"
    shutil.copy(exported[0], ck)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(ck), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert f"model {ck}: onnxruntime on cpu" in capsys.readouterr().out
    assert main(["predict", str(ck), str(tmp_path / "a.png"), "--out", str(tmp_path / "p"), "--engine", "torch"]) == 0
    assert f"model {ck}: PyTorch on cpu" in capsys.readouterr().out


def test_a_stain_input_model_trains_reloads_and_exports(tmp_path):
    """model.stain_input travels with the checkpoint: the detector rebuilt from it and its
    ONNX export (the deconvolution inside the graph) give the same heatmaps."""
    from sparsecell.inference.detector import Detector
    from sparsecell.inference.onnx import ONNX_TOLERANCE, export_onnx
    from sparsecell.inference.load import load_detector

    ck = train(load_config(None, TINY + ["eval.mpp=0.5", "model.stain_input=true", f"train.out_dir={tmp_path / 'run'}"]),
               quiet=True).best_checkpoint  # fmt: skip
    det = Detector.from_checkpoint(ck, device="cpu")
    assert det.config.model.stain_input is True
    onnx_det = load_detector(export_onnx(ck, tmp_path / "m.onnx", example_side=64))
    img = np.random.default_rng(1).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    assert np.abs(det.heatmap(img) - onnx_det.heatmap(img)).max() < ONNX_TOLERANCE
