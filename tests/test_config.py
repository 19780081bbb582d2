import pytest

from sparsecell.config import Config, load_config
from sparsecell.errors import ConfigError


def test_defaults_and_overrides():
    c = load_config(None, ["loss.name=ce", "data.keep=0.1", "train.milestones=[0.5,0.9]", "model.dim=32", "loss.pu_prior=0.1"])
    assert c.loss.name == "ce" and c.data.keep == 0.1 and c.train.milestones == [0.5, 0.9]
    assert c.model.overrides() == {"dim": 32} and c.loss.pu_prior == 0.1
    assert c.eval.threshold is None and c.eval.radius == 6.0


def test_reading_a_config_imports_no_torch(tmp_path):
    import subprocess
    import sys

    code = "import sys; from sparsecell.config import load_config; load_config(None, ['loss.name=ce']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_settings_that_moved_to_eval_are_read_from_old_configs_and_checkpoints():
    old = {"train": {"radius": 15.0, "min_distance": 4, "peak_mode": "foreground", "threshold": 0.5, "epochs": 3}}
    c = Config.from_dict(old)
    assert (c.eval.radius, c.eval.min_distance, c.eval.peak_mode, c.train.epochs) == (15.0, 4, "foreground", 3)
    assert c.eval.threshold is None  # the old train.threshold was only the value before validation
    assert load_config(None, ["train.radius=9"]).eval.radius == 9.0
    with pytest.raises(ConfigError, match="unknown key 'threshold' in train"):
        load_config(None, ["train.threshold=0.3"])

def test_yaml_round_trip(tmp_path):
    c = load_config(None, ["data.source=crchisto", "data.root=/data/crc", "data.val_ids=[a,b]"])
    path = c.save(tmp_path / "c.yaml")
    back = load_config(path)
    assert back.to_dict() == c.to_dict()


@pytest.mark.parametrize(
    "override,message",
    [
        ("loss.nme=ce", "unknown key 'nme' in loss"),
        ("data.keep=abc", "data.keep = 'abc'"),
        ("data.crop=1.5", "data.crop = 1.5"),
        ("x=1", "expected section.key=value"),
        ("optim.lr=1", "unknown section 'optim'"),
        ("loss.name=foo", "unknown method 'foo'; choose one of pu_sar, pu, ce, sel_sfl"),
        ("eval.peak_mode=max", "peak_mode must be"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("data:\n  kep: 0.2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key data.kep"):
        load_config(bad)


def test_shipped_configs_load():
    from pathlib import Path

    for f in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        assert isinstance(load_config(f), Config)


@pytest.mark.parametrize("override", [
    "data.keep=-0.1", "data.keep=0", "data.keep=1.5", "train.batch_size=0", "data.sigma=-1", "train.val_every=0",
    "train.epochs=-1", "train.epochs=0", "train.lr=-1", "model.size=huge", "train.precision=8-bit",
    "train.accelerator=tpu", "data.crops_per_image=0", "eval.radius=-1", "eval.threshold=nan", "eval.threshold=1",
    "loss.pu_keep=0", "loss.teacher_decay=1", "data.region=0", "train.devices=0", "data.keep=.inf",
])  # fmt: skip
def test_values_out_of_range_name_the_key_value_and_range(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg and ("allowed" in msg or "finite" in msg or "choose one of" in msg), msg


def test_yaml_aliases_and_huge_files_are_refused(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("data:\n  train_ids: &a [x, x]\n  val_ids: [*a, *a, *a]\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_config(bomb)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20))
    with pytest.raises(ConfigError, match="too large"):
        load_config(big)


def test_model_names_match_the_models():
    from sparsecell.config import MODEL_NAMES
    from sparsecell.models import MODEL_SIZES

    assert set(MODEL_NAMES) == set(MODEL_SIZES)


def test_random_bytes_as_a_config_give_only_config_errors(tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.binary(max_size=800) | st.text(max_size=300))
    def check(data):
        p = tmp_path / "c.yaml"
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        try:
            load_config(p)
        except ConfigError as e:
            assert "\n" not in str(e)

    check()
