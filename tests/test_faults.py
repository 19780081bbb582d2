"""Faults during training: a kill at any moment, SIGTERM, a loss that is not finite, a
resume with another config or from a bad file. Nothing may be lost or reported as a
success."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import TINY
from sparsecell.inference.checkpoint import read_checkpoint
from sparsecell.errors import CheckpointError, ConfigError, TrainingError
from sparsecell.training.loop import train

EXE = Path(sys.executable).parent / "sparsecell"
#: A run long enough to be killed in the middle: 8 epochs of 24 steps.
LONG = [*TINY, "data.crops_per_image=16", "train.epochs=8"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([str(EXE), "train", *LONG, f"train.out_dir={out}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _wait_for_epoch(out: Path, epoch: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until ``last.ckpt`` holds ``epoch`` (0-based) or later."""
    last = out / "checkpoints" / "last.ckpt"
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if last.is_file():
            try:
                if torch.load(last, weights_only=True)["epoch"] >= epoch:
                    return
            except (EOFError, RuntimeError, pickle.UnpicklingError):
                pytest.fail("last.ckpt was readable half-written: checkpoints are not atomic")
        time.sleep(0.2)
    pytest.fail(f"no epoch {epoch} within {timeout} s")


def _every_checkpoint_loads(out: Path) -> dict[str, dict]:
    found = {p.name: torch.load(p, weights_only=True) for p in (out / "checkpoints").glob("*")}
    assert set(found) == {"best.ckpt", "last.ckpt"}, sorted(found)  # no temporaries left behind
    for p in found:
        read_checkpoint(out / "checkpoints" / p)
    return found


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_epoch(out, 2, proc)
    time.sleep(0.7)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert 2 <= killed_at["epoch"] < 7
    r = subprocess.run([str(EXE), "train", *LONG, f"train.out_dir={out}", "--resume"], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    ck = _every_checkpoint_loads(out)
    steps_per_epoch = 3 * 16 // 2
    assert ck["last.ckpt"]["epoch"] == 7 and ck["last.ckpt"]["global_step"] == 8 * steps_per_epoch
    assert ck["best.ckpt"]["epoch"] <= 7


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_non_zero_then_resumes(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_epoch(out, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("sparsecell train: stopped by SIGTERM at epoch ") and "continue with --resume" in last_line
    step = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert f"step {step};" in last_line  # the checkpoint holds the state the message names
    r = subprocess.run([str(EXE), "train", *LONG, f"train.out_dir={out}", "--resume"], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert _every_checkpoint_loads(out)["last.ckpt"]["epoch"] == 7


class _WorseEachEpoch(L.Callback):
    """Reports a validation F1 that falls every epoch, so the best epoch is the first."""

    def on_validation_end(self, trainer, pl_module):
        trainer.callback_metrics["val_f1"] = torch.tensor(1.0 / (trainer.current_epoch + 1))


def test_last_checkpoint_is_the_last_epoch_not_the_best(tiny_config):
    r = train(tiny_config("train.epochs=3"), quiet=True, callbacks=[_WorseEachEpoch()])
    last = torch.load(r.last_checkpoint, weights_only=True)
    best = torch.load(r.best_checkpoint, weights_only=True)
    assert best["epoch"] == 0 and last["epoch"] == 2 and last["global_step"] == 3 * best["global_step"]


class _Poison(L.Callback):
    """Makes the weights NaN at the start of the second epoch."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(pl_module.model.parameters()).fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config):
    cfg = tiny_config("train.epochs=3")
    with pytest.raises(TrainingError, match=r"the loss became nan at epoch 2, step 4; .*last good checkpoint is .*last\.ckpt"):
        train(cfg, quiet=True, callbacks=[_Poison()])
    last = torch.load(Path(cfg.train.out_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_resume_with_another_config_is_refused_before_anything_is_written(tiny_config):
    cfg = tiny_config("loss.name=ce")
    train(cfg, quiet=True)
    out = Path(cfg.train.out_dir)
    before = {p: p.read_bytes() for p in [out / "config.yaml", *(out / "checkpoints").glob("*")]}
    with pytest.raises(ConfigError, match=r"was trained with loss.name = 'ce', this run asks for 'pu'"):
        train(tiny_config("loss.name=pu", "train.epochs=2"), resume="last", quiet=True)
    assert {p: p.read_bytes() for p in before} == before
    # more epochs are allowed
    r = train(tiny_config("loss.name=ce", "train.epochs=2"), resume="last", quiet=True)
    assert torch.load(r.last_checkpoint, weights_only=True)["epoch"] == 1


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sparsecell_pwned",))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n" * 10, pickle.dumps({"state_dict": _Boom()}),
                                     os.urandom(3000)], ids=["empty", "text", "malicious", "random"])  # fmt: skip
def test_resume_from_a_bad_file_is_refused_before_the_data_loads(tmp_path, content):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    from sparsecell.config import load_config

    # data that does not exist: had the data been loaded first, the error would name it
    cfg = load_config(None, [*TINY, "data.source=folder", f"data.root={tmp_path / 'nowhere'}", f"train.out_dir={tmp_path / 'r'}"])
    with pytest.raises(CheckpointError, match="bad.ckpt: not a readable checkpoint"):
        train(cfg, resume=bad, quiet=True)
    assert not Path("/tmp/sparsecell_pwned").exists()
    assert not (tmp_path / "r").exists()


def test_cli_train_reports_errors_in_one_line_and_writes_nothing(tmp_path, capsys):
    from sparsecell.cli import main

    for ov, msg in [("data.keep=0", "data.keep = 0.0 is out of range; allowed: (0, 1]"),
                    ("train.epochs=0", "train.epochs = 0 is out of range"),
                    ("train.accelerator=tpu", "train.accelerator = 'tpu' is not allowed"),
                    ("train.strategy=bogus", "invalid strategy name"),
                    ("train.devices=[5]", "devices [5]"),
                    ("model.depth=300", "model.depth = 300 is out of range"),
                    ("model.size=unet_cpu model.depth=2", "model size 'unet_cpu' takes no setting 'depth'")]:  # fmt: skip
        assert main(["train", "--out", str(tmp_path / "r"), *ov.split()]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and msg in err, err
    assert not (tmp_path / "r").exists()
    if not torch.cuda.is_available():
        assert main(["train", "--out", str(tmp_path / "r"), "train.accelerator=gpu"]) == 2
        assert "no CUDA GPU is available" in capsys.readouterr().err
