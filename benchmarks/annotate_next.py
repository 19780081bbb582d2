"""Evidence for "annotate next": does choosing where to click save clicks?

A simulated loop (``sparsecell.annotate.simulate``) on CRCHisto and BCData: the training
images cut into candidate squares (128 px on BCData, 125 px on CRCHisto: whole tiles); round 0 annotates ``--start`` squares at
random completely and trains from scratch; each of ``--rounds`` rounds adds
``--per-round`` squares chosen by a strategy from the last model, clicks every cell in
them, and fine-tunes the last model (``train.init``, ``--init-epochs``). Test micro F1
and, on BCData, the per-image Ki-67 index error after every round, against the
cumulative clicks. ``--once`` adds, per strategy, the final budget spent in one round
from scratch. Validation images choose threshold and checkpoint; the test images are
never used for a choice.

    .venv/bin/python benchmarks/annotate_next.py --datasets bcdata crchisto --seeds 0 1 2

Writes ``benchmarks/results/annotate_next.json`` (``{"default_strategy", "full_f1",
"rows"}``), a markdown report and the F1-versus-clicks figure beside it. ``full_f1`` is
cross-entropy on every label in the same setting, read from
``benchmarks/results/ki67_classical.json`` (same folds, model, epochs and crops).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from sparse_annotation import DATASETS, _commit, folder  # noqa: E402

from sparsecell.annotate.acquire import DEFAULT_STRATEGY, STRATEGIES  # noqa: E402
from sparsecell.annotate.simulate import SETTINGS, LoopSetup, round0, run_once, run_strategy  # noqa: E402
from sparsecell.config import load_config  # noqa: E402
from sparsecell.datasets import load_samples, open_dataset  # noqa: E402
from sparsecell.datasets.bcdata import folds as bcdata_folds  # noqa: E402
from sparsecell.annotate.report import annotate_report, plot_annotate  # noqa: E402
from sparsecell.evidence import environment  # noqa: E402


#: The candidate squares' side per data set: whole tiles of its images.
REGION = {"bcdata": 128, "crchisto": 125}


def setup_for(args, ds: str, seed: int) -> tuple[LoopSetup, list[str]]:
    spec = DATASETS[ds]
    ov = [f"data.root={args.data / folder(ds)}", f"data.sigma={spec['sigma']}", f"data.crop={args.crop}",
          f"data.crops_per_image={spec['crops_per_image']}", f"model.size={args.model}", f"train.batch_size={args.batch_size}",
          f"train.lr={args.lr}", f"train.val_every={args.val_every}", f"eval.radius={spec['radius']}",
          f"loss.name={args.method}", f"train.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}"]  # fmt: skip
    if folder(ds) == "crchisto":
        ov += ["data.source=crchisto", "data.mode=detection", "data.train_split=train", "data.val_split=validation"]
        test = open_dataset("crchisto", args.data / folder(ds), "test", mode="detection")
        test = [test[i] for i in range(len(test))]
    else:
        d = open_dataset("bcdata", args.data / ds, "test")
        folds = bcdata_folds(d.ids(), max(seed + 1, 3))
        train_ids, val_ids, test_ids = folds[seed]
        ov += ["data.source=bcdata", "data.train_split=test", "data.val_split=null",
               f"data.train_ids={json.dumps(train_ids + val_ids)}", f"data.val_ids={json.dumps(val_ids)}"]  # fmt: skip
        test = [d[d.index(i)] for i in test_ids]
    ov += list(args.set or [])
    train_s, _, _ = load_samples(load_config(None, ov + ["data.sparsity=region"]))
    side = args.region or REGION[ds]
    tag = ("" if args.setting == "exhaustive" else f"_{args.setting}") + ("_peer" if args.peer_start else "")
    return LoopSetup(ov, train_s, test, args.work / f"{ds}{tag}", region=side, start=0 if args.peer_start else args.start,
                     per_round=args.per_round, rounds=args.rounds, epochs=args.epochs, init_epochs=args.init_epochs,
                     device=args.device, tta="disagree" in args.strategies, setting=args.setting,
                     salient_keep=args.salient_keep, peer=args.peer_start), ov  # fmt: skip


def full_f1(path: Path) -> dict:
    """Cross-entropy on every label (mean test F1 over seeds) per data set, from the Ki-67 peer's results."""
    if not path.is_file():
        return {}
    rows = [r for r in json.loads(path.read_text())["rows"] if r["method"] == "ce" and r["keep"] >= 1.0]
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["dataset"], []).append(r["f1"])
    return {k: sum(v) / len(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--datasets", nargs="+", default=["bcdata", "crchisto"], choices=["bcdata", "crchisto"])
    ap.add_argument("--strategies", nargs="+", default=["random", "densest", "uncertain", "diverse", "combined"],
                    choices=list(STRATEGIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--once", nargs="*", default=None, metavar="STRATEGY",
                    help="also spend each named strategy's final budget in one round from scratch (no name: random and the default)")
    ap.add_argument("--region", type=int, default=None,
                    help="candidate square side, px (default: 128 on BCData's 640 px images, 125 on CRCHisto's 500 px: whole tiles)")
    ap.add_argument("--start", type=int, default=15, help="squares annotated in round 0, at random")
    ap.add_argument("--setting", default="exhaustive", choices=list(SETTINGS),
                    help="how the simulated pathologist clicks inside a chosen square: every cell; --salient-keep of "
                         "them, the conspicuous ones first, the square not declared complete (salient) or still "
                         "declared complete (salient_complete)")
    ap.add_argument("--salient-keep", type=float, default=0.5, help="salient: the share of each square's cells clicked")
    ap.add_argument("--peer-start", action="store_true",
                    help="round 0 without a click: the classical peer's labels (fitted on validation), kept outside "
                         "the clicked squares in every round")
    ap.add_argument("--per-round", type=int, default=30, help="squares added each round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds after round 0")
    ap.add_argument("--epochs", type=int, default=20, help="round 0 (and --once) from scratch")
    ap.add_argument("--init-epochs", type=int, default=8, help="each fine-tuning round")
    ap.add_argument("--method", default="pu_sar", help="the training method (loss.name)")
    ap.add_argument("--model", default="vig_cpu")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--val-every", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "annotate_next")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "annotate_next.json")
    ap.add_argument("--full-from", type=Path, default=ROOT / "benchmarks" / "results" / "ki67_classical.json")
    ap.add_argument("--append", action="store_true", help="add the new rows to those already in --out")
    ap.add_argument("--reuse-start", action="store_true",
                    help="with --append: take each seed's round-0 model from --work where an earlier run left it "
                         "(to add strategies to a run) instead of training it again")
    ap.add_argument("--report", action="store_true", help="train nothing: rewrite the report and figure from --out")
    args = ap.parse_args()
    once = [] if args.once is None else (args.once or ["random", DEFAULT_STRATEGY])
    doc = json.loads(args.out.read_text()) if (args.append or args.report) and args.out.is_file() else {}
    rows: list[dict] = doc.get("rows", [])
    started = time.time()
    round0_tag = "peer" if args.peer_start else "clicks"

    def write() -> None:
        from sparsecell.formats.fileio import atomic_write_text

        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        full = {**doc.get("full_f1", {}), **full_f1(args.full_from)}
        runs = doc.get("runs") or ([doc["config"]] if "config" in doc else [])  # every run's settings, oldest first
        if not args.report:
            runs = runs + [{**cfg, "git_commit": _commit()}]
        out = {"default_strategy": DEFAULT_STRATEGY, "full_f1": full, "runs": runs, "environment": environment(),
               "git_commit": _commit(),
               "seconds": round(time.time() - started) + doc.get("seconds", 0) * bool(args.append or args.report), "rows": rows}  # fmt: skip
        atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), annotate_report(out))
        if rows:
            plot_annotate(out, args.out.with_suffix(".png"))

    if args.report:
        write()
        print(f"wrote {args.out.with_suffix('.md')} from {len(rows)} rows")
        return
    for ds in args.datasets:
        if not (args.data / folder(ds)).is_dir():
            print(f"skipping {ds}: {args.data / folder(ds)} not found")
            continue
        for seed in args.seeds:
            setup, _ = setup_for(args, ds, seed)

            def log(row, ds=ds):
                ki = f" Ki-67 MAE {row['ki67_mae']:.1f} pp" if row.get("ki67_mae") is not None else ""
                print(f"[{time.time() - started:6.0f} s] {ds} seed {row['seed']} {row['strategy']:14s} round {row['round']} "
                      f"{row['regions']:3d} regions {row['clicks']:5d} clicks F1 {row['f1']:.3f}{ki} "
                      f"({row['seconds']:.0f} s)", flush=True)  # fmt: skip

            earlier = [r for r in rows if r["dataset"] == ds and r["seed"] == seed and r["strategy"] == "start"
                       and r.get("setting", "exhaustive") == args.setting and r.get("round0", "clicks") == round0_tag]
            start = round0(setup, seed, reuse=earlier[0] if (args.reuse_start and earlier) else None)
            got = [] if earlier and start.row is earlier[0] else [start.row]  # a reused round 0 is on record already
            log(start.row)
            for s in args.strategies:
                got += run_strategy(setup, s, seed, start, log=log)
            for s in once:
                got.append(run_once(setup, s, seed, start))
                log(got[-1])
            rows.extend({**r, "dataset": ds, "setting": args.setting, "round0": round0_tag} for r in got)
            write()
    write()
    print(annotate_report({"default_strategy": DEFAULT_STRATEGY, "full_f1": full_f1(args.full_from), "rows": rows}))


if __name__ == "__main__":
    main()
