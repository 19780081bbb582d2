"""Behaviour fingerprint: tiny trainings through the command line, each loss's weights
and scores hashed, so a refactor can show it changed nothing.

    python benchmarks/behaviour_check.py --out /tmp/before.json
    python benchmarks/behaviour_check.py --out /tmp/after.json --compare /tmp/before.json

Runs in about a minute on 2 CPU cores; only the command line is used, so the
fingerprint survives moves inside the package.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TINY = ["data.synthetic_train=3", "data.synthetic_val=2", "data.synthetic_size=128", "data.crop=64",
        "data.crops_per_image=2", "model.dim=32", "model.depth=2", "train.batch_size=2", "train.epochs=2",
        "train.progress_bar=false", "train.seed=3"]  # fmt: skip
LOSSES = ["ce", "const", "sel_sfl", "sel_pc", "teacher", "pu", "sel_pu", "pu_pseudo", "pu_sar"]


def _engine_flag() -> list[str]:
    """``--engine torch`` where predict has it (the reference predates the flag and ran PyTorch)."""
    h = subprocess.run([sys.executable, "-m", "sparsecell.cli", "predict", "--help"], capture_output=True, text=True)
    return ["--engine", "torch"] if "--engine" in h.stdout else []


ENGINE: list[str] = []


def fingerprint(loss: str, work: Path) -> dict:
    import torch

    out = work / loss
    cmd = [sys.executable, "-m", "sparsecell.cli", "train", *TINY, f"loss.name={loss}", "data.sparsity=salient",
           "data.keep=0.5", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, check=True, capture_output=True, text=True)
    ckpt = out / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    validation = [ln for ln in run.stdout.splitlines() + run.stderr.splitlines() if "best validation F1" in ln]
    pred = out / "pred"
    subprocess.run([sys.executable, "-m", "sparsecell.cli", "predict", str(ckpt), str(work / "ihc.png"), "--out",
                    str(pred), "--no-overlay", "--device", "cpu", *ENGINE], check=True, capture_output=True, text=True)  # fmt: skip
    cells = sorted(pred.glob("*.csv"))
    return {"weights_sha256": h.hexdigest(), "validation": validation,
            "cells_sha256": hashlib.sha256(b"".join(c.read_bytes() for c in cells)).hexdigest()}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare")
    ap.add_argument("--losses", nargs="*", default=LOSSES)
    a = ap.parse_args()
    ENGINE[:] = _engine_flag()
    with tempfile.TemporaryDirectory() as d:
        from PIL import Image
        from skimage.data import immunohistochemistry

        Image.fromarray(immunohistochemistry()[:256, :256]).save(Path(d) / "ihc.png")  # a real IHC crop, offline
        res = {loss: fingerprint(loss, Path(d)) for loss in a.losses}
    Path(a.out).write_text(json.dumps(res, indent=1, sort_keys=True))
    if a.compare:
        ref = json.loads(Path(a.compare).read_text())
        diff = [k for k in res if ref.get(k) != res[k]]
        for k in res:
            print(f"{k:10s} {'same' if k not in diff else 'DIFFERENT'}")
        return 1 if diff else 0
    for k, v in res.items():
        print(k, v["weights_sha256"][:16])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
