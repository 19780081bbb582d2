"""`sparsecell predict` on slides: outputs, reruns, one-line errors, shards and ranks."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY
from slide_fixtures import blob_image, truncate, write_svs
from sparsecell.cli import main
from sparsecell.config import load_config
from sparsecell.training.loop import train

pytest.importorskip("tiffslide")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(load_config(None, TINY + ["eval.mpp=0.5", f"train.out_dir={out / 'run'}"]), quiet=True).best_checkpoint


@pytest.fixture
def slides(tmp_path):
    d = tmp_path / "slides"
    d.mkdir()
    for k in range(3):
        write_svs(d / f"S{k}.svs", blob_image(640, 480, seed=k), mpp=0.5)
    return d


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sparsecell predict: error:"), err
    return err


def test_predict_slides_writes_a_folder_per_slide_and_a_cohort(model, slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(model), str(slides), "--out", str(out), "--threshold", "0.3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["S0", "S1", "S2", "cohort.csv"]
    with open(out / "cohort.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["S0", "S1", "S2"]
    s = json.loads((out / "S1" / "summary.json").read_text())
    assert s["threshold"] == 0.3 and s["model_mpp"] == 0.5 and int(rows[1]["cells"]) == s["cells"]
    capsys.readouterr()
    assert main(["predict", str(model), str(slides), "--out", str(out), "--threshold", "0.3"]) == 0
    assert capsys.readouterr().out.count("done already, skipped") == 3


def failure_lines(capsys, n_failed: int, n_slides: int) -> list[str]:
    """A line per failed slide, then one that counts them: nothing else on stderr (a run
    of one slide: that slide's one line, naming where its status is)."""
    err = capsys.readouterr().err.strip().splitlines()
    if n_slides == 1:
        assert len(err) == 1 and err[0].startswith("sparsecell predict: ") and "(status in " in err[0], err
        return err
    assert len(err) == n_failed + 1, err
    assert all(ln.startswith("sparsecell predict: failed: ") for ln in err[:-1]), err
    assert err[-1].startswith(f"sparsecell predict: {n_failed} of {n_slides} slides failed"), err
    return err[:-1]


def test_predict_slide_errors_are_one_line_and_leave_nothing(model, slides, tmp_path, capsys):
    out = tmp_path / "out"
    write_svs(tmp_path / "nompp.svs", blob_image(300, 200), mpp=None)
    assert main(["predict", str(model), str(tmp_path / "nompp.svs"), "--out", str(out)]) == 1
    assert "no resolution" in failure_lines(capsys, 1, 1)[0]
    roi = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]]},
           "properties": {"objectType": "annotation"}}  # fmt: skip
    (tmp_path / "roi.geojson").write_text(json.dumps(roi))
    assert main(["predict", str(model), str(slides / "S0.svs"), "--out", str(out), "--roi", str(tmp_path / "roi.geojson")]) == 1
    assert "no ROI lies on this slide" in failure_lines(capsys, 1, 1)[0]
    write_svs(tmp_path / "cut.svs", blob_image(640, 480), mpp=0.5)
    truncate(tmp_path / "cut.svs", 0.4)
    assert main(["predict", str(model), str(tmp_path / "cut.svs"), "--out", str(out)]) == 1
    assert "cut.svs" in failure_lines(capsys, 1, 1)[0]
    assert main(["predict", str(model), str(tmp_path / "missing.svs"), "--out", str(out)]) == 2
    assert "not found" in one_line_error(capsys)
    assert not [p for p in out.iterdir() if p.is_dir()]  # no slide folder, nothing half-written
    assert sorted(p.name for p in out.iterdir()) == [".failed-S0.json", ".failed-cut.json", ".failed-nompp.json", "cohort.csv"]


def test_a_bad_slide_does_not_stop_the_cohort(model, slides, tmp_path, capsys):
    bad = tmp_path / "more" / "a_bad.svs"
    bad.parent.mkdir()
    write_svs(bad, blob_image(640, 480), mpp=0.5)
    truncate(bad, 0.4)
    write_svs(tmp_path / "more" / "b_nompp.svs", blob_image(300, 200), mpp=None)
    out = tmp_path / "out"
    argv = ["predict", str(model), str(bad), str(tmp_path / "more" / "b_nompp.svs"), str(slides), "--out", str(out)]
    assert main(argv) == 1
    lines = failure_lines(capsys, 2, 5)
    assert "a_bad.svs" in lines[0] and "b_nompp.svs: " in lines[1] and "no resolution" in lines[1]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["S0", "S1", "S2"]
    with open(out / "cohort.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["S0", "S1", "S2", "a_bad", "b_nompp"]
    assert [rows[f"S{k}"]["status"] for k in range(3)] == ["ok"] * 3 and rows["S0"]["cells"] != ""
    assert rows["a_bad"]["status"].startswith(f"failed: {bad}: ") and "\n" not in rows["a_bad"]["status"]
    assert rows["b_nompp"]["status"].startswith("failed: ") and rows["b_nompp"]["cells"] == ""
    # a rerun retries the failed slides only; once one is fixed, its row is ok
    write_svs(tmp_path / "more" / "b_nompp.svs", blob_image(300, 200), mpp=0.5)
    assert main(argv) == 1
    assert capsys.readouterr().out.count("done already, skipped") == 3
    with open(out / "cohort.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert rows["b_nompp"]["status"] == "ok" and rows["a_bad"]["status"].startswith("failed: ")
    assert not (out / ".failed-b_nompp.json").exists()


def test_errors_of_the_whole_run_stop_at_once(model, slides, tmp_path, capsys):
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "bad.ckpt"), str(slides), "--out", str(out)]) == 2
    assert "bad.ckpt" in one_line_error(capsys) and not out.exists()
    (tmp_path / "file").write_text("x")
    assert main(["predict", str(model), str(slides), "--out", str(tmp_path / "file")]) == 2
    assert "--out is a file" in one_line_error(capsys)


def test_shards_split_the_slides(model, slides, tmp_path, capsys):
    out = tmp_path / "out"
    for i in range(2):
        assert main(["predict", str(model), str(slides), "--out", str(out), "--shard", f"{i}/2", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["S0", "S1", "S2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_take_whole_slides_and_rank0_merges(model, slides, tmp_path):
    out = tmp_path / "out"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "sparsecell.cli", "predict", str(model), str(slides), "--out", str(out),
                                       "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = [[ln.split()[1].rstrip(":") for ln in o.splitlines() if ln.startswith("[")] for o, _ in outs]
    assert sorted(os.path.basename(p) for d in done for p in d) == ["S0.svs", "S1.svs", "S2.svs"]  # each slide by one rank
    assert all(done)  # both ranks worked
    with open(out / "cohort.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert "cohort.csv" in outs[0][0] and "cohort.csv" not in outs[1][0]


def _mode(*argv):
    from sparsecell.cli import _slide_mode, build_parser

    return _slide_mode(build_parser().parse_args(["predict", "m.ckpt", *map(str, argv), "--out", "o"]))


def test_a_tif_is_a_slide_when_it_is_tiled_pyramidal_or_large(tmp_path):
    from slide_fixtures import write_tiff

    small = write_tiff(tmp_path / "small.tif", blob_image(300, 200), tile=None)
    assert not _mode(small)  # a small plain TIFF is an image
    assert _mode(write_tiff(tmp_path / "tiled.tif", blob_image(300, 200), tile=128))  # tiled
    assert _mode(write_svs(tmp_path / "pyramid.tif", blob_image(640, 480), downsamples=(1, 4)))  # several levels
    assert _mode(write_tiff(tmp_path / "wide.tiff", np.zeros((100, 1025, 3), np.uint8), tile=None))  # over one 1024 px tile
    assert not _mode(write_tiff(tmp_path / "edge.tif", np.zeros((1024, 1024, 3), np.uint8), tile=None))  # exactly one tile
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    assert not _mode(tmp_path / "junk.tif")  # unparsable: the image reader says why
    assert not _mode(small, tmp_path / "x.png") and _mode(small, tmp_path / "pyramid.tif")
    assert _mode(small, "--slides") and not _mode(tmp_path / "tiled.tif", "--images")
    with pytest.raises(SystemExit):
        _mode(small, "--slides", "--images")


def test_slides_and_images_flags_choose_the_outputs(model, tmp_path, capsys):
    from slide_fixtures import write_tiff

    img = blob_image(300, 200)
    write_tiff(tmp_path / "small.tif", img, tile=None)
    write_tiff(tmp_path / "tiled.tif", img, tile=128)
    assert main(["predict", str(model), str(tmp_path / "small.tif"), "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "small.csv").is_file() and not (tmp_path / "a" / "cohort.csv").exists()
    assert main(["predict", str(model), str(tmp_path / "tiled.tif"), "--out", str(tmp_path / "b"), "--mpp", "0.5", "--quiet"]) == 0
    assert (tmp_path / "b" / "tiled" / "summary.json").is_file() and (tmp_path / "b" / "cohort.csv").is_file()
    assert main(["predict", str(model), str(tmp_path / "tiled.tif"), "--out", str(tmp_path / "c"), "--images"]) == 0
    assert (tmp_path / "c" / "tiled.csv").is_file() and not (tmp_path / "c" / "tiled").exists()
    assert main(["predict", str(model), str(tmp_path / "small.tif"), "--out", str(tmp_path / "d"), "--slides", "--mpp", "0.5", "--quiet"]) == 0
    assert (tmp_path / "d" / "small" / "summary.json").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--slides treat the inputs as slides" in help_text and "--images treat the inputs as plain images" in help_text
