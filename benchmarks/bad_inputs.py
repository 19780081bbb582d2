"""Bad inputs, faults and hostile files against the command line: what each one gets.

Builds every case in a temporary folder, runs the ``sparsecell`` command on it as a user
would (a fresh process each), and sorts the outcome:

- ``one-line error``: a non-zero exit and one line on stderr naming the problem;
- ``handled``: the run succeeds and does the right thing (the case says what);
- ``TRACEBACK`` / ``SILENT SUCCESS`` / ``DATA LOST``: failures of sparsecell.

Writes ``docs/bad_inputs.md`` (the table) and prints a count per outcome.

    .venv/bin/python benchmarks/bad_inputs.py            # about 5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "sparsecell"
TINY = ["data.synthetic_train=3", "data.synthetic_val=2", "data.synthetic_size=128", "data.crop=64",
        "data.crops_per_image=2", "model.dim=32", "model.depth=2", "train.batch_size=2", "train.epochs=1",
        "train.progress_bar=false"]  # fmt: skip


@dataclass
class Case:
    area: str
    what: str
    args: Callable[[Path], list[str]]  # the command line, given the work folder
    expect: str = "error"  # "error" or "ok"
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None  # a problem, or None
    setup: Callable[[Path], None] | None = None
    signal_after: tuple[str, float] | None = None  # (file to wait for, seconds after it appears): then SIGTERM
    outcome: str = ""
    detail: str = ""


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(case: Case, work: Path) -> None:
    args = case.args(work)
    env = dict(os.environ, PYTHONWARNINGS="default")
    inputs = work / "inputs"
    before = _digest(inputs)
    if case.signal_after is None:
        proc = subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=work, env=env, timeout=600)
    else:
        import signal

        p = subprocess.Popen([str(EXE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=env)
        target, delay = case.signal_after
        t0 = time.time()
        while not (work / target).exists() and time.time() - t0 < 300 and p.poll() is None:
            time.sleep(0.1)
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=300)
        proc = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    err_lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    lost = [k for k, v in before.items() if _digest(inputs).get(k) != v]
    problem = case.check(work, proc) if case.check else None
    if "Traceback" in proc.stderr:
        case.outcome, case.detail = "TRACEBACK", err_lines[-1] if err_lines else ""
    elif lost:
        case.outcome, case.detail = "DATA LOST", f"changed: {', '.join(lost[:3])}"
    elif case.expect == "error" and proc.returncode == 0:
        case.outcome, case.detail = "SILENT SUCCESS", (proc.stdout.strip().splitlines() or [""])[-1]
    elif problem:
        case.outcome, case.detail = "WRONG", problem
    elif case.expect == "error":
        last = err_lines[-1] if err_lines else ""
        cmd = args[0]
        ok = last.startswith(f"sparsecell {cmd}: ") and not any(line.startswith("sparsecell ") for line in err_lines[:-1])
        case.outcome = "one-line error" if ok else "UNCLEAR ERROR"
        case.detail = f"exit {proc.returncode}: " + last.replace(str(work) + "/", "")
    else:
        case.outcome = "handled" if proc.returncode == 0 else "FAILED"
        case.detail = (err_lines[-1] if proc.returncode else (proc.stdout.strip().splitlines() or [""])[-1]).replace(str(work) + "/", "")


# ---------------------------------------------------------------------------------------
# The inputs every case starts from
# ---------------------------------------------------------------------------------------
def _prepare(work: Path) -> None:
    from sparsecell.formats.points import write_csv
    from sparsecell.report import save_png
    from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_dataset

    inp = work / "inputs"
    (inp / "tiles").mkdir(parents=True)
    for i, (img, pts, _) in enumerate(synthetic_dataset(2, seed=3, config=SyntheticConfig(size=96))):
        save_png(img, inp / "tiles" / f"t{i}.png")
        write_csv(pts, inp / "tiles" / f"t{i}.csv")
    r = subprocess.run([str(EXE), "train", *TINY, f"train.out_dir={work / 'model'}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (inp / "model.ckpt").write_bytes((work / "model" / "checkpoints" / "best.ckpt").read_bytes())


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _cases() -> list[Case]:
    T = lambda *ov: (lambda w: ["train", *TINY, f"train.out_dir={w / 'runs' / 'r'}", *ov])  # noqa: E731
    S = lambda *a: (lambda w: ["suggest", str(w / ("m.onnx" if "m.onnx" in a else "inputs/model.ckpt")),  # noqa: E731
                               *[str(w / x) if x.endswith(".svs") else x for x in a if x != "m.onnx"], "--out", str(w / "next")])
    P = lambda *a: (lambda w: ["predict", str(w / "inputs" / "model.ckpt"), *[str(w / x) if "/" in x else x for x in a]])  # noqa: E731
    E = lambda *a: (lambda w: ["evaluate", str(w / "inputs" / "model.ckpt"), *[str(w / x) if "/" in x else x for x in a]])  # noqa: E731
    no_pwn = lambda w, p: "code in a pickle ran" if (w / "pwned").exists() else None  # noqa: E731
    cases = [
        # configs
        *[Case("config", f"`{ov}`", T(ov)) for ov in [
            "data.keep=0", "data.keep=-0.1", "data.keep=1.5", "data.keep=nan", "train.epochs=0", "train.epochs=-1",
            "train.batch_size=0", "data.sigma=-1", "train.val_every=0", "train.lr=-1", "model.size=huge",
            "train.precision=8", "train.accelerator=tpu", "train.accelerator=gpu", "data.crops_per_image=0",
            "eval.radius=-1", "eval.threshold=1.5", "loss.name=magic", "loss.pu_keep=0", "data.crop=1.5",
            "train.devices=0", "data.source=mnist", "train.nope=1", "data.train_ids=[&a x, *a]", "train.strategy=bogus",
            "train.devices=[5]", "model.stride=3", "data.crop=100"]],
        Case("config", "`model.size=unet_cpu model.depth=3` (a setting that size does not take)",
             T("model.size=unet_cpu", "model.depth=3")),
        Case("config", "a YAML alias bomb (700 bytes)", lambda w: ["train", str(w / "bomb.yaml")],
             setup=_write("bomb.yaml", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                          "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                          "data:\n  train_ids: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n")),  # fmt: skip
        Case("config", "a config that is not YAML", lambda w: ["train", str(w / "bad.yaml")], setup=_write("bad.yaml", "data: [1, 2\n")),
        Case("config", "a config that is binary", lambda w: ["train", str(w / "bin.yaml")], setup=_write("bin.yaml", bytes(range(256)))),
        Case("config", "a config file that does not exist", lambda w: ["train", str(w / "none.yaml")]),
        Case("config", "a data folder that does not exist", T("data.source=folder", "data.root=nowhere")),
        # training faults
        Case("training", "SIGTERM during training (a scheduler's stop)", T("train.epochs=50", "data.crops_per_image=8"),
             signal_after=("runs/r/checkpoints/last.ckpt", 1.0),
             check=lambda w, p: None if p.returncode == 143 and (w / "runs/r/checkpoints/last.ckpt").is_file() else "no checkpoint or wrong exit"),
        Case("training", "a second run into a folder with checkpoints",
             lambda w: ["train", *TINY, f"train.out_dir={w / 'model'}"]),
        Case("training", "`--resume` with another loss", lambda w: ["train", *TINY, f"train.out_dir={w / 'model'}", "loss.name=ce", "--resume"]),
        Case("training", "`--resume` from an empty file", lambda w: ["train", *TINY, f"train.out_dir={w / 'runs' / 'r'}", "--resume", str(w / "e.ckpt")],
             setup=_write("e.ckpt", b"")),
        Case("training", "`--resume` from a malicious pickle", lambda w: ["train", *TINY, f"train.out_dir={w / 'runs' / 'r'}", "--resume", str(w / "m.ckpt")],
             setup=_write("m.ckpt", pickle.dumps({"state_dict": _Boom()})), check=no_pwn),
        Case("training", "`--resume` with more epochs", lambda w: ["train", *TINY, f"train.out_dir={w / 'model'}", "train.epochs=2", "--resume"],
             expect="ok"),
        # checkpoints
        Case("checkpoint", "a text file as the checkpoint", lambda w: ["predict", str(w / "t.ckpt"), str(w / "inputs/tiles/t0.png"), "--out", str(w / "o")],
             setup=_write("t.ckpt", "not a checkpoint\n" * 30)),
        Case("checkpoint", "random bytes as the checkpoint", lambda w: ["predict", str(w / "r.ckpt"), str(w / "inputs/tiles/t0.png"), "--out", str(w / "o")],
             setup=_write("r.ckpt", np.random.default_rng(0).bytes(5000))),
        Case("checkpoint", "a malicious pickle as the checkpoint", lambda w: ["evaluate", str(w / "m.ckpt"), str(w / "inputs/tiles")],
             setup=_write("m.ckpt", pickle.dumps({"hyper_parameters": {"config": {}}, "state_dict": _Boom()})), check=no_pwn),
        Case("checkpoint", "a checkpoint that does not exist", lambda w: ["predict", str(w / "none.ckpt"), str(w / "inputs/tiles/t0.png"), "--out", str(w / "o")]),
        # outputs
        Case("outputs", "`predict --out` the annotated folder (would replace the truth CSVs)", P("inputs/tiles/t0.png", "--out", "inputs/tiles")),
        Case("outputs", "`predict --out` a file", P("inputs/tiles/t0.png", "--out", "inputs/tiles/t0.csv")),
        Case("outputs", "`predict` two inputs with the same name", P("inputs/tiles/t0.png", "dup/t0.png", "--out", "o"),
             setup=lambda w: _write("dup/t0.png", (w / "inputs/tiles/t0.png").read_bytes())(w),
             check=lambda w, p: "outputs written" if (w / "o").exists() else None),
        Case("outputs", "`predict` with one unreadable input among good ones", P("inputs/tiles/t0.png", "bad.png", "--out", "o"),
             setup=_write("bad.png", b"\x89PNG\r\n\x1a\nbroken"), check=lambda w, p: "outputs written" if (w / "o").exists() else None),
        Case("outputs", "`predict --threshold nan`", P("inputs/tiles/t0.png", "--out", "o", "--threshold", "nan")),
        Case("outputs", "`predict --device tpu`", P("inputs/tiles/t0.png", "--out", "o", "--device", "tpu")),
        Case("outputs", "`predict --device cuda` without a GPU", P("inputs/tiles/t0.png", "--out", "o", "--device", "cuda")),
        Case("outputs", "`evaluate --radius -5`", E("inputs/tiles", "--radius", "-5")),
        Case("outputs", "`evaluate` where the JSON exists", E("inputs/tiles", "--out", "inputs/tiles/t0.csv")),
        Case("outputs", "`predict` into the same folder twice with `--overwrite`", P("inputs/tiles/t0.png", "--out", "o2", "--overwrite"),
             expect="ok", setup=lambda w: (w / "o2").mkdir(exist_ok=True)),
        # point files
        Case("points", "evaluate: CSV without labels against a 2-class model", E("plain"),
             setup=lambda w: (_write("plain/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w), _write("plain/a.csv", "x,y\n5,5\n")(w))),
        Case("points", "evaluate: GeoJSON without classification against a 2-class model", E("geo"),
             setup=lambda w: (_write("geo/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w),
                              _write("geo/a.geojson", json.dumps({"type": "FeatureCollection", "features": [
                                  {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}}]}))(w))),
        Case("points", "evaluate: a coordinate `true` in GeoJSON", E("geob"),
             setup=lambda w: (_write("geob/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w),
                              _write("geob/a.geojson", json.dumps([{"type": "Feature", "geometry": {"type": "Point", "coordinates": [True, 5]},
                                                                    "properties": {"classification": {"name": "positive"}}}]))(w))),
        Case("points", "evaluate: SHIDC label_id 1.7", E("shidc"),
             setup=lambda w: (_write("shidc/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w),
                              _write("shidc/a.json", json.dumps([{"x": 5, "y": 5, "label_id": 1.7}]))(w))),
        Case("points", "evaluate: a point outside its image", E("out"),
             setup=lambda w: (_write("out/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w), _write("out/a.csv", "x,y,label\n500,5,positive\n")(w))),
        Case("points", "evaluate: a CSV with a non-numeric coordinate", E("nan"),
             setup=lambda w: (_write("nan/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w), _write("nan/a.csv", "x,y,label\nfive,5,positive\n")(w))),
        Case("points", "evaluate: GeoJSON nested 5000 deep", E("deep"),
             setup=lambda w: (_write("deep/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w), _write("deep/a.geojson", "[" * 5000)(w))),
        Case("points", "evaluate: a repeated click in a CSV (kept once, with a warning)", E("dup2", "--out", "dup2.json"), expect="ok",
             setup=lambda w: (_write("dup2/a.png", (w / "inputs/tiles/t0.png").read_bytes())(w),
                              _write("dup2/a.csv", "x,y,label\n5,5,positive\n5,5,positive\n")(w))),
        Case("points", "evaluate: a data folder that does not exist", E("nowhere")),
        # images
        Case("images", "a 2600x2600 PNG of 30 KB (predicted by 1024 px tiles)", P("big.png", "--out", "obig", "--no-overlay"),
             expect="ok", setup=lambda w: __import__("PIL.Image", fromlist=["Image"]).fromarray(
                 np.full((2600, 2600, 3), 200, np.uint8)).save(w / "big.png")),
        Case("images", "a TIFF decompression bomb (12000x12000, 450 KB)", P("bomb.tif", "--out", "o"),
             setup=lambda w: __import__("tifffile").imwrite(w / "bomb.tif", np.zeros((12000, 12000, 3), np.uint8),
                                                            compression="zlib", tile=(512, 512))),  # fmt: skip
        Case("images", "a truncated PNG", P("trunc.png", "--out", "o"),
             setup=lambda w: _write("trunc.png", (w / "inputs/tiles/t0.png").read_bytes()[:300])(w)),
        Case("images", "a text file named .png", P("text.png", "--out", "o"), setup=_write("text.png", "hello\n")),
        Case("images", "an image that does not exist", P("none.png", "--out", "o")),
        # whole slides (a 640 x 480 SVS at 0.5 um/px; the model's resolution given with --model-mpp)
        *[Case("slides", what, P(*a, "--out", "os", "--model-mpp", "0.5"), setup=setup,
               check=lambda w, p: "slide outputs left" if (w / "os").exists() and any(q.is_dir() for q in (w / "os").iterdir()) else None)
          for what, a, setup in [
              ("a slide without a resolution", ["nompp.svs"], _slide("nompp.svs", mpp=None)),
              ("a truncated slide", ["cut.svs"], _slide("cut.svs", damage="truncate")),
              ("a slide with a corrupt tile", ["bad.svs"], _slide("bad.svs", damage="tile")),
              ("a 72 dpi TIFF as a slide (353 um/px)", ["dpi.tif", "--slides"], _slide("dpi.tif", damage="dpi")),
              ("an ROI outside the slide", ["ok.svs", "--roi", "roi.geojson"], lambda w: (_slide("ok.svs")(w), _write("roi.geojson", json.dumps(
                  {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[9000, 9000], [9900, 9000], [9900, 9900], [9000, 9000]]]},
                   "properties": {}}))(w))),
              ("an ROI file that is not JSON", ["ok.svs", "--roi", "roi.txt"], lambda w: (_slide("ok.svs")(w), _write("roi.txt", "{oops")(w))),
              ("`--shard 3/2`", ["ok.svs", "--shard", "3/2"], _slide("ok.svs")),
              ("a folder with no slide", ["empty/"], lambda w: (w / "empty").mkdir(exist_ok=True)),
          ]],
        Case("slides", "a checkpoint without a resolution and no `--model-mpp`",
             lambda w: ["predict", str(w / "nompp.ckpt"), str(w / "ok.svs"), "--out", str(w / "os")],
             setup=lambda w: (_slide("ok.svs")(w), _without_mpp(w / "inputs" / "model.ckpt", w / "nompp.ckpt"))),
        # annotate next: suggest and --init
        *[Case("annotate", what, S(*a), setup=setup,
               check=lambda w, p: "suggestions written" if (w / "next").exists() else None)
          for what, a, setup in [
              ("`suggest` on a slide without tissue", ["glass.svs"], _slide("glass.svs", damage="glass")),
              ("`suggest` asked for more regions than fit", ["ok.svs", "--regions", "5000"], _slide("ok.svs")),
              ("`suggest` squares larger than the slide", ["ok.svs", "--size-um", "5000"], _slide("ok.svs")),
              ("`suggest` on a slide without a resolution", ["nompp.svs"], _slide("nompp.svs", mpp=None)),
              ("`suggest` with an ONNX model", ["m.onnx", "ok.svs"], lambda w: (_slide("ok.svs")(w), _write("m.onnx", b"onnx?")(w))),
          ]],
        Case("annotate", "`suggest` into a folder that holds suggestions, no `--overwrite`",
             lambda w: ["suggest", str(w / "inputs" / "model.ckpt"), str(w / "ok.svs"), "--out", str(w / "inputs" / "next")],
             setup=lambda w: (_slide("ok.svs")(w), _write("inputs/next/suggestions.csv", "rank\n")(w))),
        Case("annotate", "`train --init` from an ONNX export", T("--init", "m.onnx"), setup=_write("m.onnx", b"onnx?")),
        Case("annotate", "`train --init` from a checkpoint that does not exist", T("--init", "none.ckpt")),
        Case("annotate", "`train --init` from a model of another width", lambda w: ["train", *TINY, "model.dim=48",
             f"train.out_dir={w / 'runs' / 'r'}", "--init", str(w / "inputs" / "model.ckpt")],  # fmt: skip
             check=lambda w, p: "checkpoints written" if (w / "runs" / "r" / "checkpoints").exists() else None),
        Case("annotate", "`train --init` from the last round (fine-tuning)", lambda w: ["train", *TINY, f"train.out_dir={w / 'runs' / 'r1'}",
             "--init", str(w / "inputs" / "model.ckpt")], expect="ok",  # fmt: skip
             check=lambda w, p: None if (w / "runs" / "r1" / "summary.json").is_file() and "since" in p.stdout + p.stderr
             else "no summary.json or no change since the last round"),
    ]
    return cases


def _without_mpp(src: Path, dst: Path) -> None:
    """A copy of a checkpoint whose config records no resolution (as one trained on images of unknown mpp)."""
    import torch

    ck = torch.load(src, map_location="cpu", weights_only=True)
    ck["hyper_parameters"]["config"]["eval"]["mpp"] = None
    ck["hyper_parameters"]["config"]["data"]["source"] = "folder"  # (synthetic tiles imply 0.5 um/px)
    torch.save(ck, dst)


def _slide(name: str, mpp: float | None = 0.5, damage: str | None = None) -> Callable[[Path], None]:
    """A small synthetic SVS (the tests' writer), damaged as asked."""

    def setup(work: Path) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from slide_fixtures import blob_image, corrupt_tile, truncate, write_svs, write_tiff

        img = np.full((480, 640, 3), 250, np.uint8) if damage == "glass" else blob_image(640, 480)
        if damage == "dpi":
            write_tiff(work / name, img)
            return
        write_svs(work / name, img, mpp=mpp, tile=128)
        if damage == "truncate":
            truncate(work / name, 0.4)
        elif damage == "tile":
            corrupt_tile(work / name, page=0, tile_index=5)

    return setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bad_inputs.md")
    ap.add_argument("--only", help="run the cases whose description contains this")
    args = ap.parse_args()
    cases = [c for c in _cases() if not args.only or args.only in c.what]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        base = Path(d) / "base"
        base.mkdir()
        _prepare(base)
        for i, c in enumerate(cases):
            work = Path(d) / f"case{i}"
            subprocess.run(["cp", "-a", str(base), str(work)], check=True)
            if c.setup:
                c.setup(work)
            _run(c, work)
            print(f"[{time.time() - t0:5.0f} s] {c.outcome:15s} {c.area:10s} {c.what}: {c.detail[:150]}", flush=True)
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    lines = ["# Bad inputs and what they get", "",
             f"Generated by `benchmarks/bad_inputs.py` ({len(cases)} cases, {time.time() - t0:.0f} s): each case is "
             "run as a user would, in a fresh process. Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".",
             "", "| area | input | outcome | what the user sees |", "|---|---|---|---|"]  # fmt: skip
    for c in cases:
        detail = c.detail.replace("|", "\\|")
        lines.append(f"| {c.area} | {c.what} | {c.outcome} | {detail} |")
    from sparsecell.formats.fileio import atomic_write_text

    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
