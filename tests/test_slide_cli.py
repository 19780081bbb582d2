"""`sparsecell predict` on slides: outputs, reruns, one-line errors, shards and ranks."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

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


def test_predict_slide_errors_are_one_line_and_leave_nothing(model, slides, tmp_path, capsys):
    out = tmp_path / "out"
    write_svs(tmp_path / "nompp.svs", blob_image(300, 200), mpp=None)
    assert main(["predict", str(model), str(tmp_path / "nompp.svs"), "--out", str(out)]) == 2
    assert "no resolution" in one_line_error(capsys)
    roi = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]]]},
           "properties": {"objectType": "annotation"}}  # fmt: skip
    (tmp_path / "roi.geojson").write_text(json.dumps(roi))
    assert main(["predict", str(model), str(slides / "S0.svs"), "--out", str(out), "--roi", str(tmp_path / "roi.geojson")]) == 2
    assert "no ROI lies on this slide" in one_line_error(capsys)
    write_svs(tmp_path / "cut.svs", blob_image(640, 480), mpp=0.5)
    truncate(tmp_path / "cut.svs", 0.4)
    assert main(["predict", str(model), str(tmp_path / "cut.svs"), "--out", str(out)]) == 2
    assert "cut.svs" in one_line_error(capsys)
    assert main(["predict", str(model), str(tmp_path / "missing.svs"), "--out", str(out)]) == 2
    assert "not found" in one_line_error(capsys)
    assert not out.exists() or not [p for p in out.iterdir() if p.name != "cohort.csv"]


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
