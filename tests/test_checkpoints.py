"""Reading checkpoints: ours load; anything else (empty, text, random bytes, a
malicious pickle, a foreign or mangled checkpoint) is one CheckpointError naming the
file, and no code in a file ever runs."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY
from sparsecell.inference.checkpoint import read_checkpoint
from sparsecell.cli import main
from sparsecell.config import load_config
from sparsecell.errors import CheckpointError
from sparsecell.inference.detector import Detector
from sparsecell.training.loop import train

PWNED = Path(tempfile.gettempdir()) / "sparsecell_checkpoint_pwned"


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(load_config(None, TINY + [f"train.out_dir={out / 'run'}"]), quiet=True).best_checkpoint


def test_our_checkpoint_reads_back_config_classes_threshold(good):
    ck = read_checkpoint(good)
    assert ck.classes == ("positive", "negative") and ck.config.model.dim == 32
    assert ck.threshold == round(float(ck.state_dict["threshold"]), 4) and ck.epoch == 0 and ck.global_step > 0
    assert set(ck.model_state()) == {k[6:] for k in ck.state_dict if k.startswith("model.")}


def _bad_files(tmp_path, good) -> dict[str, Path]:
    files = {
        "empty": b"",
        "text": b"epoch: 3\nweights: none\n" * 20,
        "random": os.urandom(4096),
        "malicious": pickle.dumps({"hyper_parameters": {"config": {}, "classes": ["a"]}, "state_dict": _Boom()}),
    }
    out = {}
    for name, data in files.items():
        (tmp_path / f"{name}.ckpt").write_bytes(data)
        out[name] = tmp_path / f"{name}.ckpt"
    torch.save({"epoch": 1, "state_dict": {}}, tmp_path / "foreign.ckpt")  # a Lightning checkpoint, not ours
    out["foreign"] = tmp_path / "foreign.ckpt"
    ck = torch.load(good, weights_only=True)
    ck["state_dict"] = {k: (v[:1] if k.startswith("model.") and v.ndim else v) for k, v in ck["state_dict"].items()}
    torch.save(ck, tmp_path / "mangled.ckpt")  # our config, weights of the wrong shape
    out["mangled"] = tmp_path / "mangled.ckpt"
    ck = torch.load(good, weights_only=True)
    ck["hyper_parameters"]["config"]["train"]["epochs"] = -3
    torch.save(ck, tmp_path / "badconfig.ckpt")
    out["badconfig"] = tmp_path / "badconfig.ckpt"
    return out


def test_every_bad_file_is_one_checkpoint_error(tmp_path, good, capsys):
    for name, path in _bad_files(tmp_path, good).items():
        with pytest.raises(CheckpointError, match=path.name) as e:
            Detector.from_checkpoint(path, device="cpu")
        assert "\n" not in str(e.value), name
        rc = main(["predict", str(path), "x.png", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and path.name in err, (name, err)
    assert not PWNED.exists()
    assert not (tmp_path / "o").exists()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_are_only_checkpoint_errors(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.ckpt"
        p.write_bytes(data)
        with pytest.raises(CheckpointError):
            read_checkpoint(p)
