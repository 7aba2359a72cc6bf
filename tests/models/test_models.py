"""UNet, model registry and the deployable wrapper (normalization, NaN handling, log scale)."""

import numpy as np
import pytest
import torch

from pandafine.core.scaling import RADIANCE_REF, log_to_radiance
from pandafine.models import input_multiple, resolve_model_config
from pandafine.models.registry import build_model
from pandafine.models.unet import UNet
from pandafine.models.wrapper import PandaFineNet


@pytest.mark.parametrize("shape, depth, norm", [((2, 11, 32, 48), 3, "none"), ((1, 5, 16, 16), 1, "none"),
                                               ((3, 11, 24, 8), 2, "batch")])
def test_unet_output_shape(shape, depth, norm):
    torch.manual_seed(0)
    net = UNet(shape[1], width=4, depth=depth, norm=norm).eval()
    with torch.no_grad():
        out = net(torch.randn(*shape))
    assert out.shape == (shape[0], 1, shape[2], shape[3])
    assert torch.isfinite(out).all()
    assert net.multiple == 2**depth


def test_unet_levels_double_width():
    net = UNet(3, width=5, depth=3)
    assert [d.conv[0].out_channels for d in net.downs] == [10, 20, 40]
    with pytest.raises(ValueError, match="depth"):
        UNet(3, width=4, depth=0)
    with pytest.raises(ValueError, match="normalization 'group'"):
        UNet(3, width=4, depth=1, norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in UNet(3, 4, 1, norm="batch").modules())


def test_build_model_registry():
    net = build_model({"name": "unet", "width": 4, "depth": 2}, 7)
    assert isinstance(net, UNet) and (net.in_channels, net.width, net.depth, net.norm) == (7, 4, 2, "none")
    assert build_model({"name": "unet", "width": 4, "depth": 2, "norm": "batch"}, 7).norm == "batch"
    assert resolve_model_config({"name": "unet", "width": 4, "depth": 2})["norm"] == "none"
    assert input_multiple({"name": "unet", "width": 4, "depth": 2}) == 4
    with pytest.raises(ValueError, match="model.name.*'gan'"):
        build_model({"name": "gan"}, 7)
    with pytest.raises(ValueError, match="depth"):
        build_model({"name": "unet", "width": 4}, 7)


class FirstChannel(torch.nn.Module):
    """z = the first normalized channel (lets the wrapper be checked by hand)."""

    def forward(self, x):
        return x[:, :1]


def test_wrapper_known_answer_and_nan():
    mean, std = [2.0, 0.0], [4.0, 1.0]
    model = PandaFineNet(FirstChannel(), mean, std)
    x = torch.tensor([[[[10.0, 2.0, float("nan"), -6.0]], [[0.0, 0.0, 0.0, 0.0]]]])  # (1, 2, 1, 4)
    z = model.log_radiance(x)
    np.testing.assert_allclose(z[0, 0, 0].numpy(), [2.0, 0.0, 0.0, -2.0])  # NaN -> 0 (the channel mean)
    out = model(x)[0, 0, 0].numpy()
    np.testing.assert_allclose(out, [np.expm1(2.0) * RADIANCE_REF, 0, 0, 0], rtol=1e-6)  # z < 0 clamps to 0
    np.testing.assert_allclose(out, log_to_radiance(z).numpy()[0, 0, 0], rtol=1e-6)


def test_wrapper_degenerate_std_is_one():
    model = PandaFineNet(FirstChannel(), [1.0], [0.0])
    assert torch.equal(model.log_radiance(torch.tensor([[[[3.0]]]])), torch.tensor([[[[2.0]]]]))
    with pytest.raises(ValueError, match="same length"):
        PandaFineNet(FirstChannel(), [1.0, 2.0], [1.0])


def test_wrapper_nan_equals_mean_filled_input():
    torch.manual_seed(1)
    mean = torch.randn(11).tolist()
    std = (torch.rand(11) + 0.5).tolist()
    model = PandaFineNet(UNet(11, width=4, depth=2), mean, std).eval()
    x = torch.randn(2, 11, 16, 16) * 2
    holes = torch.rand_like(x) < 0.2
    x_nan = torch.where(holes, torch.full_like(x, float("nan")), x)
    x_mean = torch.where(holes, torch.tensor(mean).view(1, -1, 1, 1).expand_as(x), x)
    with torch.no_grad():
        a, b = model(x_nan), model(x_mean)
    assert torch.isfinite(a).all() and (a >= 0).all()
    assert torch.equal(a, b)
