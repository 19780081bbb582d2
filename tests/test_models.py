import pytest
import torch

from sparsecell.config import DataConfig, LossConfig
from sparsecell.losses import LossBatch, build_loss
from sparsecell.models import MODEL_SIZES, UNetDetector, ViGDetector, build_model
from sparsecell.models.vig import knn_graph


def test_knn_graph_includes_self_and_dilation():
    x = torch.randn(2, 8, 20)
    idx = knn_graph(x, k=4, dilation=2)
    assert idx.shape == (2, 20, 4)
    assert (idx[:, :, 0] == torch.arange(20)).all()  # nearest to itself


@pytest.mark.parametrize("size", ["vig_cpu", "unet_cpu"])
@pytest.mark.parametrize("hw", [(32, 32), (64, 48), (96, 160)])
def test_any_multiple_of_stride_is_accepted(size, hw):
    m = build_model(size, num_classes=2).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, *hw))
    s = m.stride
    assert out.logits.shape == (1, 3, *hw)
    assert out.embedding.shape == (1, m.embed_dim, hw[0] // s, hw[1] // s)


def test_other_sizes_are_rejected_clearly():
    m = build_model("vig_cpu")
    with pytest.raises(ValueError, match="not a multiple of the model stride 16"):
        m(torch.randn(1, 3, 50, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="unknown model size"):
        build_model("vig_xxl")
    with pytest.raises(ValueError, match="power of two"):
        ViGDetector(stride=24)


def test_named_sizes_are_constructor_arguments():
    m = build_model("vig_cpu", num_classes=3, dim=32, depth=2, stride=8)
    assert isinstance(m, ViGDetector) and m.stride == 8 and len(m.blocks) == 2
    assert m(torch.randn(1, 3, 16, 24)).logits.shape == (1, 4, 16, 24)
    assert isinstance(build_model("unet_cpu"), UNetDetector)
    assert MODEL_SIZES["vig_s"]["depth"] == 16 and MODEL_SIZES["vig_s"]["dim"] == 320


def test_k_grows_from_9_to_18_and_dilation_as_vig():
    m = ViGDetector(dim=16, depth=8, stride=8)
    ks = [b.grapher.k for b in m.blocks]
    ds = [b.grapher.dilation for b in m.blocks]
    assert ks[0] == 9 and ks[-1] == 18 and ks == sorted(ks)
    assert ds == [1, 1, 1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_cpu(dtype):
    m = build_model("vig_cpu").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        out = m(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(out.logits.float()).all()


@pytest.mark.parametrize("name", ["ce", "sel_sfl"])
def test_a_few_steps_on_a_synthetic_tile_lower_the_loss(name):
    from sparsecell.datasets.synthetic_tiles import SyntheticConfig, synthetic_tile
    from sparsecell.training.targets import gaussian_heatmap, node_labels

    torch.manual_seed(0)
    img, pts = synthetic_tile(0, SyntheticConfig(size=64))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    t = torch.from_numpy(gaussian_heatmap(pts, (64, 64), 3.0))[None]
    m = build_model("vig_cpu", num_classes=pts.num_classes)
    lab = torch.from_numpy(node_labels(pts, (64, 64), m.stride))[None]
    loss_fn = build_loss(LossConfig(name=name), DataConfig())
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        out = m(x)
        loss = loss_fn(LossBatch(out.logits, out.embedding, t, lab, step=step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_stain_channels_are_scikit_images_colour_deconvolution():
    """The fixed deconvolution in front of a stain-input model: RGB kept, then H, E, DAB
    densities proportional to ``rgb2hed``'s (which uses natural logs of I / 255) where both are positive."""
    import numpy as np
    from skimage.color import rgb2hed
    from skimage.data import immunohistochemistry

    from sparsecell.models.detector import StainChannels

    img = immunohistochemistry()[:96, :96]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    out = StainChannels()(x)
    assert out.shape == (1, 6, 96, 96) and torch.equal(out[:, :3], x)
    ours = out[0, 3:].permute(1, 2, 0).numpy()
    ref = rgb2hed(img)
    for c in (0, 2):  # haematoxylin and DAB: this image has no eosin
        r = np.corrcoef(ours[..., c].ravel(), np.maximum(ref[..., c], 0).ravel())[0, 1]
        assert r > 0.95, (c, r)
    assert (ours >= 0).all()
    white = torch.ones(1, 3, 16, 16)  # glass: no stain at all
    assert StainChannels()(white)[:, 3:].abs().max() < 1e-6


@pytest.mark.parametrize("size", ["vig_cpu", "unet_cpu"])
def test_stain_input_models_take_rgb_and_widen_only_their_first_layer(size):
    m = build_model(size, num_classes=2, stain_input=True).eval()
    first = next(c for c in m.stem.modules() if isinstance(c, torch.nn.Conv2d))
    assert first.in_channels == 6
    with torch.no_grad():
        out = m(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out.logits.shape == (1, 3, 64, 64)
    assert "stains.unmix" not in m.state_dict()  # fixed, rebuilt from the constants: not in checkpoints
