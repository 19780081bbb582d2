"""A short training on real data must learn (skipped where ../shared/data is absent)."""

import pytest

from sparsecell.config import load_config
from sparsecell.inference.detector import Detector, evaluate
from sparsecell.datasets import load_samples
from sparsecell.training.loop import train


@pytest.mark.realdata
@pytest.mark.slow
def test_short_crchisto_training_learns(shared_data, tmp_path):
    root = shared_data / "crchisto"
    if not root.is_dir():
        pytest.skip("CRCHisto not in the shared data")
    cfg = load_config(None, [
        "data.source=crchisto", f"data.root={root}", "data.keep=1.0", "data.crop=128", "data.crops_per_image=4",
        "train.epochs=6", "train.batch_size=8", "train.lr=0.003", "train.val_every=3",
        f"train.out_dir={tmp_path / 'run'}", "train.progress_bar=false", "loss.name=ce",
    ])  # fmt: skip
    cfg.data.train_ids = [s.image_id for s in load_samples(cfg)[0]][:16]  # a small, fixed subset
    r = train(cfg, quiet=True)
    det = Detector.from_checkpoint(r.best_checkpoint, device="cpu")
    _, val, _ = load_samples(cfg)
    ev = evaluate(det, val)
    # an untrained detector scores about 0.0-0.1 here; a few minutes of CPU training on
    # 16 images reach well above 0.5 (radius 6 px)
    print(f"CRCHisto short training: validation F1 {ev.all.f1:.3f}")
    assert ev.all.f1 > 0.5, ev.all
