"""The effective receptive field: known answers, global parts, the tile rule."""

import numpy as np
import pytest
import torch
from torch import nn

from pandafine.models.receptive_field import (
    brightest_samples,
    cumulative_mass,
    embed,
    mass_radius,
    measure_receptive_field,
    min_tile,
    overlap_warning,
    receptive_field_px,
    tile_error,
)


def stacked_convs(k: int, channels: int = 2, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """``k`` convolutions with positive weights and no bias (a ReLU between them changes nothing)."""
    layers = []
    for i in range(k):
        conv = nn.Conv2d(channels, 1 if i == k - 1 else channels, kernel, padding=dilation * (kernel // 2),
                         dilation=dilation, bias=False)
        nn.init.constant_(conv.weight, 1.0 / (channels * kernel * kernel))
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def positive_images(n=2, channels=2, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 1.5, (n, channels, size, size)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_stacked_3x3_convs_have_radius_k(k):
    rf = measure_receptive_field(stacked_convs(k), positive_images())
    assert (rf.radius, rf.px) == (k, 2 * k + 1)
    assert rf.complete and rf.canvas == 128 and rf.samples == 2 and rf.mass > 0


def test_the_99_percent_field_is_narrower_than_the_support():
    # 8 stacked 3x3 convolutions: the gradient reaches 8 px, but its outer rings hold < 1 % of the mass
    net = stacked_convs(8)
    assert measure_receptive_field(net, positive_images(), fraction=1.0).radius == 8
    assert measure_receptive_field(net, positive_images()).radius < 8


def test_dilation_widens_the_field():
    assert measure_receptive_field(stacked_convs(2, dilation=3), positive_images(), fraction=1.0).radius == 6


def test_pointwise_net_has_radius_zero():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 1, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()  # every ReLU on for positive inputs: a nonzero gradient
    rf = measure_receptive_field(net, positive_images(channels=3))
    assert (rf.radius, rf.px) == (0, 1) and rf.mass > 0


class LocalPlusGlobal(nn.Module):
    """A 3x3 convolution plus ``weight`` times the image mean (a global part)."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.local = stacked_convs(1, channels=1)
        self.weight = weight

    def forward(self, x):
        return self.local(x) + self.weight * x.mean(dim=(1, 2, 3), keepdim=True)


def test_a_global_part_gives_a_finite_radius():
    images = positive_images(channels=1)
    # a small global share (0.5 % of the mass) leaves the local radius
    assert measure_receptive_field(LocalPlusGlobal(0.005), images).radius == 1
    # a large one spreads the mass over the canvas: the radius is finite, grows with the canvas and says so
    rf = measure_receptive_field(LocalPlusGlobal(1.0), images, max_canvas=256)
    assert 1 < rf.radius <= rf.canvas // 2 and rf.canvas == 256 and not rf.complete
    assert measure_receptive_field(LocalPlusGlobal(1.0), images, max_canvas=128).radius < rf.radius


def test_a_constant_net_has_no_mass():
    class Constant(nn.Module):
        def forward(self, x):
            return 0.0 * x[:, :1] + 1.0

    rf = measure_receptive_field(Constant(), positive_images())
    assert rf.mass == 0 and rf.radius == 0


def test_the_measure_picks_each_images_brightest_output():
    # a bright spot off the centre: the field is measured around it, not around the canvas centre
    images = np.full((1, 1, 16, 16), 0.1, np.float32)
    images[0, 0, 3, 12] = 10.0
    rf = measure_receptive_field(stacked_convs(1, channels=1), images)
    assert rf.radius == 1


def test_measure_is_deterministic_and_checks_its_input():
    net = stacked_convs(2)
    assert measure_receptive_field(net, positive_images()) == measure_receptive_field(net, positive_images())
    bad = positive_images()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        measure_receptive_field(net, bad)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        measure_receptive_field(nn.Conv2d(2, 2, 1), positive_images())


def test_canvas_is_a_multiple_of_the_input_multiple():
    rf = measure_receptive_field(stacked_convs(1), positive_images(size=24), canvas=100, multiple=16)
    assert rf.canvas % 16 == 0 and rf.canvas >= 100


def test_cumulative_mass_and_mass_radius():
    g = np.zeros((1, 9, 9))
    g[0, 4, 4], g[0, 4, 6], g[0, 0, 0] = 90.0, 9.0, 1.0  # at distance 0, 2 and 4 of (4, 4)
    cum = cumulative_mass(g, [(4, 4)], 5)
    np.testing.assert_allclose(cum, [90, 90, 99, 99, 100, 100])
    assert [mass_radius(cum, f) for f in (0.5, 0.9, 0.95, 0.99, 1.0)] == [0, 0, 2, 2, 4]
    assert mass_radius(np.zeros(4)) == 0
    with pytest.raises(ValueError, match="fraction"):
        mass_radius(cum, 0.0)
    with pytest.raises(ValueError, match="one position per map"):
        cumulative_mass(g, [], 3)


def test_embed_mirrors_the_images_into_the_canvas():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    c = embed(x, 10)
    assert c.shape == (2, 1, 10, 10)
    np.testing.assert_array_equal(c[:, :, 3:7, 3:7], x)
    np.testing.assert_array_equal(c[:, :, 2, 3:7], x[:, :, 0])  # symmetric: the edge row repeats
    with pytest.raises(ValueError, match="smaller"):
        embed(x, 3)


def test_brightest_samples_ignores_nodata_and_keeps_order_on_ties():
    x = np.zeros((5, 2, 4, 4), np.float32)
    x[1, 0] = 3.0
    x[3, 0] = 5.0
    x[3, 0, 0, 0] = np.nan
    x[4, 0] = np.nan  # no data at all: last
    assert list(brightest_samples(x, 3)) == [3, 1, 0]
    assert list(brightest_samples(x, 5))[-1] == 4
    assert list(brightest_samples(x, 2, channel=1)) == [0, 1]


def test_tile_rule():
    assert receptive_field_px(4) == 9
    assert min_tile(9) == 16 and min_tile(63) == 64 and min_tile(64) == 64 and min_tile(1) == 8
    assert min_tile(9, multiple=16) == 16
    assert tile_error(16, 9) is None and tile_error(64, 63) is None and tile_error(61, 61) is None
    msg = tile_error(16, 61, source="model.onnx")
    assert "infer.tile" in msg and "value 16" in msg and "61 px" in msg and "30 px" in msg
    assert "infer.tile >= 64" in msg and "model.onnx" in msg


def test_overlap_warning():
    assert overlap_warning(128, 32, 9) is None        # 32 px shared >= 2 x radius 4
    assert overlap_warning(128, 32, 33) is None       # 32 px shared: 16 px from both edges, radius 16
    assert overlap_warning(128, 32, 35) is not None   # radius 17
    note = overlap_warning(128, 32, 89)               # radius 44
    assert "32 px" in note and "16 px" in note and "44 px" in note and "88 px" in note
    assert overlap_warning(64, 0, 3) is not None      # no overlap: every tile edge shows
