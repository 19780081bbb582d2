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
