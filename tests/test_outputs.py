"""What ``predict`` and ``evaluate`` write: never over a file the user did not ask to
replace, nothing half-written when a run fails, strict JSON, one-line errors."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from conftest import TINY
from sparsecell.cli import main
from sparsecell.config import load_config
from sparsecell.formats.points import write_csv
from sparsecell.report import save_png
from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_dataset
from sparsecell.training.loop import train


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(load_config(None, TINY + [f"train.out_dir={out / 'run'}"]), quiet=True).best_checkpoint


@pytest.fixture
def tiles(tmp_path):
    """Two annotated tiles: a.png + a.csv, b.png + b.csv."""
    d = tmp_path / "tiles"
    for i, (img, pts, _) in enumerate(synthetic_dataset(2, seed=3, config=SyntheticConfig(size=64))):
        save_png(img, d / f"{'ab'[i]}.png")
        write_csv(pts, d / f"{'ab'[i]}.csv")
    return d


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def _predict(ckpt, *args) -> int:
    return main(["predict", str(ckpt), *map(str, args), "--device", "cpu"])


def test_predict_never_overwrites_without_asking(ckpt, tiles, capsys):
    truth = (tiles / "a.csv").read_bytes()
    assert _predict(ckpt, tiles / "a.png", "--out", tiles) == 2  # into the annotated folder itself
    err = _err(capsys)
    assert "a.csv: exists" in err and "--overwrite" in err
    assert (tiles / "a.csv").read_bytes() == truth
    assert sorted(p.name for p in tiles.iterdir()) == ["a.csv", "a.png", "b.csv", "b.png"]  # nothing else written
    assert _predict(ckpt, tiles / "a.png", "--out", tiles, "--overwrite") == 0
    assert (tiles / "a.csv").read_bytes() != truth


def test_predict_checks_every_input_before_writing(ckpt, tiles, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.png").write_bytes((tiles / "a.png").read_bytes())
    assert _predict(ckpt, tiles / "a.png", tmp_path / "other" / "a.png", "--out", out) == 2
    assert "share the name 'a'" in _err(capsys)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert _predict(ckpt, tiles / "a.png", tmp_path / "broken.png", "--out", out) == 2
    assert "broken.png: not a readable image" in _err(capsys)
    assert _predict(ckpt, tiles / "a.png", tmp_path / "missing.png", "--out", out) == 2
    assert "missing.png: image file not found" in _err(capsys)
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    assert _predict(ckpt, tiles / "a.png", "--out", tmp_path / "file") == 2
    assert "is a file, not a folder" in _err(capsys)


def test_a_failing_predict_leaves_nothing_behind(ckpt, tiles, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    from sparsecell.inference import detector as inference

    calls = []
    real = inference.Detector.predict

    def fail_on_second(self, image, threshold=None):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, image, threshold)

    monkeypatch.setattr(inference.Detector, "predict", fail_on_second)
    assert _predict(ckpt, tiles / "a.png", tiles / "b.png", "--out", out) == 2
    assert "No space left on device" in _err(capsys)
    assert list(out.iterdir()) == []  # neither a's outputs nor a summary nor the staging folder


def test_predict_summary_is_strict_json_with_the_checkpoint_threshold(ckpt, tiles, tmp_path):
    out = tmp_path / "out"
    assert _predict(ckpt, tiles / "a.png", tiles / "b.png", "--out", out, "--no-overlay") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "a.geojson", "b.csv", "b.geojson", "summary.json"]
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert summary["classes"] == ["positive", "negative"] and set(summary["images"]) == {"a", "b"}


@pytest.mark.parametrize("args,msg", [
    (["--threshold", "nan"], "is not a threshold"),
    (["--threshold", "1.5"], "is not a threshold"),
])  # fmt: skip
def test_predict_bad_arguments(ckpt, tiles, tmp_path, capsys, args, msg):
    with pytest.raises(SystemExit) as e:
        main(["predict", str(ckpt), str(tiles / "a.png"), "--out", str(tmp_path / "o"), *args])
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_predict_device_error_is_one_line(ckpt, tiles, tmp_path, capsys):
    assert main(["predict", str(ckpt), str(tiles / "a.png"), "--out", str(tmp_path / "o"), "--device", "tpu"]) == 2
    assert "device 'tpu' is not known" in _err(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_into_a_read_only_folder(ckpt, tiles, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert _predict(ckpt, tiles / "a.png", "--out", ro) == 2
        assert "Permission denied" in _err(capsys)
    finally:
        ro.chmod(stat.S_IRWXU)


def test_evaluate_classes_that_differ_from_the_models_are_one_line(ckpt, tmp_path, capsys):
    d = tmp_path / "plain"
    d.mkdir()
    img, _, _ = synthetic_dataset(1, seed=4, config=SyntheticConfig(size=64))[0]
    save_png(img, d / "t.png")
    (d / "t.csv").write_text("x,y\n10,10\n")  # no labels: one class, the model has two
    assert main(["evaluate", str(ckpt), str(d), "--device", "cpu", "--out", str(tmp_path / "e.json")]) == 2
    err = _err(capsys)
    assert "classes ['tumour']" in err and "['positive', 'negative']" in err
    assert not (tmp_path / "e.json").exists()


def test_evaluate_writes_strict_json_and_does_not_overwrite(ckpt, tiles, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["evaluate", str(ckpt), str(tiles), "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert res["radius_px"] == 6.0 and res["n_images"] == 2
    before = out.read_bytes()
    assert main(["evaluate", str(ckpt), str(tiles), "--device", "cpu", "--out", str(out)]) == 2
    assert "e.json: exists" in _err(capsys)
    assert out.read_bytes() == before
    with pytest.raises(SystemExit):
        main(["evaluate", str(ckpt), str(tiles), "--radius", "-5"])
    assert "is not a positive number" in capsys.readouterr().err


def test_evaluate_with_no_true_point_writes_null_ap(ckpt, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    save_png(np.full((64, 64, 3), 230, np.uint8), d / "blank.png")
    (d / "blank.csv").write_text('# classes: ["positive", "negative"]\nx,y,label\n')
    out = tmp_path / "e.json"
    assert main(["evaluate", str(ckpt), str(d), "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["ap"] is None
