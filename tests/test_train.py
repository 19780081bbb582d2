"""End to end: train, checkpoint, reload, predict, evaluate, CLI, resume, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from sparsecell.cli import main
from sparsecell.config import load_config
from sparsecell.datasets import Sample, load_samples
from sparsecell.errors import CheckpointError, ConfigError
from sparsecell.inference.detector import Detector, evaluate
from sparsecell.formats.points import read_csv, read_geojson
from sparsecell.report import save_png
from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_dataset
from sparsecell.training.loop import train

from conftest import TINY


def _cfg(tmp_path, *extra):
    return load_config(None, TINY + [f"train.out_dir={tmp_path / 'run'}", *extra])


def test_train_reload_predict_evaluate_and_cli_outputs(tmp_path):
    r = train(_cfg(tmp_path, "loss.name=sel_sfl"), quiet=True)
    assert r.best_checkpoint.is_file() and r.last_checkpoint.is_file()
    assert (r.out_dir / "config.yaml").is_file() and list((r.out_dir / "logs").glob("version_*/metrics.csv"))
    det = Detector.from_checkpoint(r.best_checkpoint, device="cpu")  # the checkpoint alone
    assert det.classes == ("positive", "negative")
    # the stored threshold is the one that maximises F1 on the validation images, recomputed here
    from sparsecell.metrics import THRESHOLD_GRID, threshold_sweep

    _, val, _ = load_samples(det.config)
    sweep = threshold_sweep([s.points for s in val], [det.peaks(s.image, THRESHOLD_GRID[0]) for s in val], det.eval.radius)
    assert det.threshold == pytest.approx(sweep.best()[0], abs=1e-6) and r.threshold == det.threshold
    assert r.val_f1 == pytest.approx(sweep.best()[1], abs=1e-6)
    # the checkpoint records the Ki-67 index error on the validation images at that threshold
    from sparsecell.metrics import ki67_agreement

    agree = ki67_agreement([s.points for s in val], [det.peaks(s.image, det.threshold) for s in val])
    assert det.index_error == pytest.approx(agree.rmse, abs=1e-4)
    img, pts = synthetic_dataset(1, seed=9, config=SyntheticConfig(size=128))[0][:2]
    found = det.predict(img, threshold=0.01)
    assert found.scores is not None and found.classes == det.classes
    ev = evaluate(det, [Sample(img, pts, "t")])
    assert set(ev.scores) == {"all", "positive", "negative"} and set(ev.f1_at) == {0.5, 0.7}
    from sparsecell.metrics import score_points

    want_all = score_points([pts], [det.predict(img)], det.eval.radius)["all"]
    assert (ev.all.tp, ev.all.fp, ev.all.fn) == (want_all.tp, want_all.fp, want_all.fn)

    # CLI predict: CSV + GeoJSON the readers read back, overlay, summary with the Ki-67 index
    save_png(img, tmp_path / "tile.png")
    # (--engine torch: the cells must be det.predict's exactly; onnxruntime's parity is test_export's, within tolerance)
    rc = main(["predict", str(r.best_checkpoint), str(tmp_path / "tile.png"), "--out", str(tmp_path / "pred"), "--threshold", "0.01",
               "--device", "cpu", "--engine", "torch"])  # fmt: skip
    assert rc == 0
    want = det.predict(img, threshold=0.01)
    for back in (read_csv(tmp_path / "pred" / "tile.csv", det.classes), read_geojson(tmp_path / "pred" / "tile.geojson", det.classes)):
        np.testing.assert_allclose(back.xy, want.xy)
        np.testing.assert_array_equal(back.labels, want.labels)
    assert (tmp_path / "pred" / "tile_overlay.png").is_file()
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["images"]["tile"]["cells"] == len(want)
    assert "ki67_index" in summary["images"]["tile"]

    # CLI evaluate on a folder of images with same-stem CSV files
    data = tmp_path / "data"
    data.mkdir()
    save_png(img, data / "a.png")
    from sparsecell.formats.points import write_csv

    write_csv(pts, data / "a.csv")
    rc = main(["evaluate", str(r.best_checkpoint), str(data), "--device", "cpu", "--out", str(tmp_path / "ev.json")])
    assert rc == 0
    ev2 = json.loads((tmp_path / "ev.json").read_text())
    assert ev2["all"]["tp"] == ev.all.tp
    rc = main(["evaluate", str(r.best_checkpoint), str(data), "--device", "cpu", "--radius-um", "3.3", "--mpp", "0.55",
               "--out", str(tmp_path / "ev_um.json")])  # fmt: skip
    assert rc == 0 and json.loads((tmp_path / "ev_um.json").read_text())["radius_px"] == pytest.approx(6.0)


def test_new_run_refuses_to_overwrite_checkpoints(tmp_path):
    cfg = _cfg(tmp_path, "loss.name=ce")
    train(cfg, quiet=True)
    before = (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg, quiet=True)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes() == before


class _StartStep(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.start = (trainer.global_step, trainer.current_epoch)


def test_resume_continues_from_the_same_step(tmp_path):
    r1 = train(_cfg(tmp_path, "loss.name=ce"), quiet=True)
    steps = torch.load(r1.last_checkpoint, weights_only=True)["global_step"]
    assert steps > 0
    probe = _StartStep()
    r2 = train(_cfg(tmp_path, "loss.name=ce", "train.epochs=2"), resume="last", quiet=True, callbacks=[probe])
    assert probe.start == (steps, 1)
    assert torch.load(r2.last_checkpoint, weights_only=True)["global_step"] == 2 * steps


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.ckpt"), "x.png", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.ckpt: checkpoint not found" in err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        Detector.from_checkpoint(bad)
    assert main(["train", "--out", str(tmp_path / "r"), "loss.nam=ce"]) == 2
    assert "unknown key 'nam'" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_save_one_checkpoint(tmp_path):
    exe = Path(sys.executable).parent / "sparsecell"
    out = tmp_path / "ddp"
    cmd = [str(exe), "train", *TINY, "train.epochs=1", "train.strategy=ddp", "train.devices=2", "train.accelerator=cpu",
           f"train.out_dir={out}"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["best.ckpt", "last.ckpt"]
    assert "wrote" in proc.stdout.strip().splitlines()[-1]
    Detector.from_checkpoint(out / "checkpoints" / "best.ckpt", device="cpu")


def test_teacher_is_an_ema_of_the_model(tmp_path):
    r = train(_cfg(tmp_path, "loss.name=teacher", "loss.teacher_warmup_steps=0", "loss.teacher_decay=0.5"), quiet=True)
    sd = torch.load(r.last_checkpoint, weights_only=True)["state_dict"]
    t = {k[len("loss_fn.teacher."):]: v for k, v in sd.items() if k.startswith("loss_fn.teacher.")}
    m = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    assert t.keys() == m.keys()
    diff = [k for k in m if m[k].is_floating_point() and not torch.equal(m[k], t[k])]
    assert diff  # the teacher lags the model
    Detector.from_checkpoint(r.last_checkpoint, device="cpu")  # the teacher's weights do not get in the way


@pytest.mark.slow
def test_demo_quick_writes_results_and_figures(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert res["default"] in res["methods"]
    assert {"ce", "const", "sel_sfl"} <= set(res["methods"])
    table = (tmp_path / "demo" / "results.md").read_text()
    for name, m in res["methods"].items():
        p, r = m["precision"], m["recall"]
        assert m["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)  # micro F1 of its own P and R
        assert f"| {m['f1']:.3f} |" in table.split(f"| {name}", 1)[1].splitlines()[0]
    assert (tmp_path / "demo" / "energy_map.png").stat().st_size > 10_000
    assert len(list((tmp_path / "demo" / "overlays").glob("*.png"))) == len(res["methods"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("wrote ") and any(line.startswith("| ce |") for line in out)
