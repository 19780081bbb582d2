"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder: $SPARSECELL_DATA, else <repo>/../shared/data; skip when absent."""
    env = os.environ.get("SPARSECELL_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set SPARSECELL_DATA)")
    return path


#: A training run that takes a second or two: 3 synthetic tiles of 128 px, a 2-block ViG.
TINY = [
    "data.synthetic_train=3",
    "data.synthetic_val=2",
    "data.synthetic_size=128",
    "data.crop=64",
    "data.crops_per_image=2",
    "model.dim=32",
    "model.depth=2",
    "train.batch_size=2",
    "train.epochs=1",
    "train.progress_bar=false",
]


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(*overrides)``: the TINY config, writing to ``tmp_path / "run"``."""
    from sparsecell.config import load_config

    def make(*extra):
        return load_config(None, TINY + [f"train.out_dir={tmp_path / 'run'}", *extra])

    return make
