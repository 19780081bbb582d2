"""Fine-tuning from the last round (``train --init``) and a short simulated annotation
loop on the synthetic tiles whose F1 rises over two rounds."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sparsecell.config import load_config
from sparsecell.datasets import dataset_options, load_samples, open_dataset
from sparsecell.errors import ConfigError
from sparsecell.inference.checkpoint import read_checkpoint
from sparsecell.training.loop import train

BASE = ["data.synthetic_train=4", "data.synthetic_val=2", "data.synthetic_size=64", "data.crop=64", "model.size=unet_cpu",
        "train.progress_bar=false"]  # fmt: skip


@pytest.fixture(scope="module")
def round0(tmp_path_factory):
    out = tmp_path_factory.mktemp("r0")
    return train(load_config(None, BASE + ["train.epochs=2", f"train.out_dir={out}"]), quiet=True)


def test_init_starts_from_the_weights_keeps_the_lineage_and_reports_the_change(round0, tmp_path):
    r1 = train(load_config(None, BASE + ["train.init_epochs=1", f"train.init={round0.best_checkpoint}",
                                         f"train.out_dir={tmp_path / 'r1'}"]), quiet=True)  # fmt: skip
    ck = read_checkpoint(r1.best_checkpoint)
    assert ck.config.train.epochs == 1  # train.init_epochs, not train.epochs
    assert [e["checkpoint"] for e in ck.lineage] == [str(round0.best_checkpoint.resolve())]
    assert ck.lineage[0]["val_f1"] == pytest.approx(round0.val_f1, abs=1e-6)
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["change"]["val_f1"] == [pytest.approx(round0.val_f1, abs=1e-6), pytest.approx(r1.val_f1, abs=1e-6)]
    assert summary["lineage"] == list(ck.lineage)
    # a third round carries the whole lineage
    r2 = train(load_config(None, BASE + ["train.init_epochs=1", f"train.init={r1.best_checkpoint}",
                                         f"train.out_dir={tmp_path / 'r2'}"]), quiet=True)  # fmt: skip
    assert len(read_checkpoint(r2.best_checkpoint).lineage) == 2


def test_init_weights_are_the_checkpoints(round0, tmp_path):
    import torch

    from sparsecell.training.loop import SparseCellModule, _init_weights

    cfg = load_config(None, BASE + [f"train.init={round0.best_checkpoint}"])
    _, _, classes = load_samples(cfg)
    module = SparseCellModule(cfg.to_dict(), classes, [], None, n_train=4)
    _init_weights(module, cfg, classes)
    want = read_checkpoint(round0.best_checkpoint).model_state()
    got = module.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_init_refuses_another_model(round0, tmp_path):
    cfg = load_config(None, BASE + ["model.size=vig_cpu", f"train.init={round0.best_checkpoint}", f"train.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="a unet_cpu model.*this run builds vig_cpu"):
        train(cfg, quiet=True)
    assert not (tmp_path / "checkpoints").exists()


def test_init_refuses_other_classes_and_onnx(round0, tmp_path):
    from sparsecell.training.loop import SparseCellModule, _init_weights

    cfg = load_config(None, BASE + [f"train.init={round0.best_checkpoint}"])
    module = SparseCellModule(cfg.to_dict(), ("tumor",), [], None, n_train=4)
    with pytest.raises(ConfigError, match=r"trained for classes \['positive', 'negative'\], this run's data has \['tumor'\]"):
        _init_weights(module, cfg, ("tumor",))
    other = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, mpp=0.25))  # (synthetic tiles fix eval.mpp)
    with pytest.raises(ConfigError, match="trained at eval.mpp = 0.5, this run asks for 0.25"):
        _init_weights(module, other, ("positive", "negative"))
    (tmp_path / "m.onnx").write_bytes(b"x")
    cfg = load_config(None, BASE + [f"train.init={tmp_path / 'm.onnx'}", f"train.out_dir={tmp_path / 'o'}"])
    with pytest.raises(ConfigError, match="m.onnx: an ONNX export cannot be fine-tuned"):
        train(cfg, quiet=True)


#: The simulated loop's synthetic data: small tiles, a small model.
LOOP_BASE = ["data.synthetic_train=8", "data.synthetic_val=4", "data.synthetic_test=4", "data.synthetic_size=128",
             "data.crop=64", "model.size=unet_cpu", "train.val_every=1", "train.lr=0.005"]  # fmt: skip


def _loop_data() -> tuple[list, list]:
    """The training samples and the test tiles of :data:`LOOP_BASE`."""
    cfg = load_config(None, LOOP_BASE)
    train_s, _, _ = load_samples(cfg)
    return train_s, list(open_dataset("synthetic", None, "test", **dataset_options(cfg.data, "test")))


def test_simulated_loop_on_synthetic_tiles_learns_over_two_rounds(tmp_path):
    from sparsecell.annotate.simulate import LoopSetup, round0 as first_round, run_strategy

    train_s, test = _loop_data()
    setup = LoopSetup(LOOP_BASE, train_s, test, tmp_path, region=64, start=2, per_round=8, rounds=2, epochs=6, init_epochs=4)
    start = first_round(setup, 1)
    rows = run_strategy(setup, "combined", 1, start)
    assert [r["round"] for r in rows] == [1, 2]
    assert start.row["clicks"] < rows[0]["clicks"] < rows[1]["clicks"]  # each round adds clicks
    assert rows[-1]["f1"] > start.row["f1"] + 0.05, (start.row["f1"], [r["f1"] for r in rows])
    # adding a strategy to the run later takes the same round 0, not a new training
    again = first_round(setup, 1, reuse=start.row)
    assert again.row is start.row and again.checkpoint == start.checkpoint and again.chosen == start.chosen


def test_simulated_loop_salient_clicking_and_a_peer_round0(tmp_path):
    from sparsecell.annotate.simulate import LoopSetup, _clicks, round0 as first_round, run_strategy

    base = LOOP_BASE
    train_s, test = _loop_data()
    kw = dict(region=64, per_round=6, rounds=1, epochs=4, init_epochs=2)
    sal = LoopSetup(base, train_s, test, tmp_path / "sal", start=4, setting="salient", salient_keep=0.5, **kw)
    start = first_round(sal, 2)
    every = _clicks(dataclasses.replace(sal, setting="exhaustive"), start.chosen).sum()
    assert 0 < start.row["clicks"] < every  # about half of the squares' cells clicked
    assert _clicks(dataclasses.replace(sal, setting="salient_complete"), start.chosen).sum() == start.row["clicks"]
    rows = run_strategy(sal, "random", 2, start)
    assert rows[0]["clicks"] > start.row["clicks"]
    peer = LoopSetup(base, train_s, test, tmp_path / "peer", start=0, peer=True, **kw)
    p0 = first_round(peer, 2)
    assert p0.row["clicks"] == 0 and p0.row["regions"] == 0
    assert p0.row["f1"] > 0.3  # the peer's labels alone teach the model to find cells
    with pytest.raises(ValueError, match="setting"):
        LoopSetup(base, train_s, test, tmp_path, setting="lazy", **kw)
