"""MMNTLSR: shapes, switches, identity initialization of the alignment, losses, ONNX parity."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fake_tiles import make_scene
from pandafine.core.channels import CHANNELS
from pandafine.models import MODEL_DEFAULTS, input_multiple, resolve_model_config
from pandafine.models import alignment as A
from pandafine.models import mmntlsr as M
from pandafine.models.registry import build_model
from pandafine.models.unet import UNet

C = len(CHANNELS)
ALIGN = ("affine", "deformable", "deformation_field")


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny(modules=None, width=4, depth=3, seed=0):
    torch.manual_seed(seed)
    return M.MMNTLSR(C, width=width, depth=depth, modules=modules)


def blocky_input(b, h, w, seed=0):
    """Random normalized channels with PANDA (channels 0, 1) constant on 8x8 blocks, as on the working grid."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, C, h, w, generator=gen)
    coarse = torch.randn(b, 2, h // 8, w // 8, generator=gen) * 2
    x[:, :2] = F.interpolate(coarse, scale_factor=8, mode="nearest")
    return x


def perturb_alignment(model, scale=0.05, seed=1):
    """Give the zero-initialized alignment heads random weights (so warps and offsets are active)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in ("affine.head", "conv.offset", "field.flow")):
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


@pytest.mark.parametrize("shape, depth", [((2, C, 16, 16), 3), ((1, C, 32, 24), 3), ((2, C, 8, 40), 1),
                                          ((1, C, 16, 32), 4)])
def test_output_shapes_eval_and_train(shape, depth):
    b, _, h, w = shape
    model = tiny(depth=depth)
    assert h % model.multiple == 0 and w % model.multiple == 0
    x = torch.randn(*shape)
    with torch.no_grad():
        z = model.eval()(x)
        z_train, aux = model.train()(x)
    assert z.shape == (b, 1, h, w) and torch.isfinite(z).all()
    assert torch.allclose(z, z_train, atol=1e-6)  # train mode only adds outputs
    assert aux["sat_logit"].shape == aux["bright"].shape == (b, 1, h, w)
    expected = {f: (b, 1, h // f, w // f) for f in (2, 4) if f <= 2**depth}
    assert {f: tuple(v.shape) for f, v in aux["multiscale"].items()} == expected
    assert aux["affine_shift"].shape == (b, 2, h // 8, w // 8) and aux["smoothness"].ndim == 0
    assert len(aux["flows"]) == depth  # local alignment at levels 1..depth


def test_each_switch_changes_parameters_and_still_runs():
    full = tiny()
    names_full = {n for n, _ in full.named_parameters()}
    x = torch.randn(1, C, 16, 16)
    counts = {}
    for switch, default in M.DEFAULT_MODULES.items():
        model = tiny({switch: not default})
        counts[switch] = n_params(model)
        assert n_params(model) != n_params(full), switch
        if not default:  # an opt-in part adds to the full model
            assert n_params(model) > n_params(full), switch
            continue
        assert {n for n, _ in model.named_parameters()} != names_full, switch
        z, aux = model.train()(x)
        assert z.shape == (1, 1, 16, 16) and torch.isfinite(z).all()
        assert {"affine": "affine_shift", "deformation_field": "smoothness", "auxiliary": "sat_logit",
                "multiscale": "multiscale"}.get(switch, "-") not in aux
    base = tiny({k: False for k in M.DEFAULT_MODULES})
    z, aux = base.train()(x)
    assert aux == {} and z.shape == (1, 1, 16, 16)
    assert base.eval()(x).shape == (1, 1, 16, 16)
    assert n_params(base) < min(counts.values())


def test_modulation_is_softplus_of_intensity_plus_pattern():
    """z = softplus(a + b): with the intensity head at 0 the output is softplus of the plain model's."""
    x = blocky_input(2, 32, 32)
    plain = tiny({"modulation": False}).eval()
    mod = tiny({"modulation": True}).eval()
    with torch.no_grad():
        mod.intensity_head.weight.zero_()
        mod.intensity_head.bias.zero_()
        assert torch.allclose(mod(x), F.softplus(plain(x)), atol=1e-6)
        mod.intensity_head.bias.fill_(1.5)  # a constant log-intensity multiplies radiance / ref by e**1.5
        assert torch.allclose(mod(x), F.softplus(plain(x) + 1.5), atol=1e-6)
        assert (mod(x) >= 0).all()


def test_local_pattern_is_a_3x3_term_of_the_log_pattern():
    """The local pattern adds a 3x3-neighbourhood network of the Landsat and DEM values to b (before the softplus)."""
    x = blocky_input(2, 32, 32)
    off = tiny({"local_pattern": False}).eval()
    on = tiny().eval()
    assert on.switches["local_pattern"] and on.switches["modulation"]
    result = off.load_state_dict(on.state_dict(), strict=False)
    assert result.missing_keys == [] and all(k.startswith("local_pattern.") for k in result.unexpected_keys)
    landsat, dem = (M._channel_slice(CHANNELS, names) for names in (M.LANDSAT_CHANNELS, M.DEM_CHANNELS))
    surface = lambda t: torch.cat([t[:, landsat], t[:, dem]], dim=1)  # the local pattern's input
    px = surface(x)
    with torch.no_grad():
        # z_on = softplus(a + b + p) and z_off = softplus(a + b): undo the softplus to compare the sums
        term = on.local_pattern(px)
        inv = lambda z: z + torch.log(-torch.expm1(-z))  # softplus^-1
        assert torch.allclose(inv(on(x)) - inv(off(x)), term, atol=1e-4)
        # local: changing one pixel's Landsat values changes the term of that pixel and its 8 neighbours only
        y = px.clone()
        y[0, :, 5, 7] += 3.0
        changed = (on.local_pattern(y) - term).abs()[0, 0] > 0
        # ... and the PANDA channels do not reach it at all
        x2 = x.clone()
        x2[:, M._channel_slice(CHANNELS, M.PANDA_CHANNELS)] += 5.0
        assert torch.equal(on.local_pattern(surface(x2)), term)
    assert changed[4:7, 6:9].all() and changed.sum() == 9


def test_alignment_is_a_no_op_at_initialization():
    """Affine (identity), deformable conv (zero offsets) and flow (zero) on = off, with the same weights."""
    full = tiny(width=8, seed=3).eval()
    plain = tiny({k: False for k in ALIGN}, width=8).eval()
    result = plain.load_state_dict(full.state_dict(), strict=False)
    assert result.missing_keys == []  # every weight of the plain model comes from the full one
    assert result.unexpected_keys  # the alignment heads
    x = blocky_input(2, 32, 24)
    with torch.no_grad():
        ref = plain(x)
        d0 = (full(x) - ref).abs().max().item()
        # and the alignment does act once its heads are trained (perturbed here)
        d1 = (perturb_alignment(full, scale=0.5)(x) - ref).abs().max().item()
    assert d0 <= 1e-5 * max(1.0, ref.abs().max().item())
    assert d1 > 1e-5 and d1 > 100 * d0


def test_cell_shift_to_flow_is_constant_for_a_constant_shift_and_interpolates_between_cells():
    shift = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(2, 2, 3, 4)
    flow = A.cell_shift_to_flow(shift, (24, 32))
    assert flow.shape == (2, 2, 24, 32) and torch.allclose(flow, shift[:, :, :1, :1].expand(2, 2, 24, 32))
    # a ramp of cell values: halfway between two cell centres the flow is their mean
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 2, 1, 4)
    f = A.cell_shift_to_flow(ramp, (8, 32))
    assert torch.equal(f[0, 0, 0, :4], torch.zeros(4))  # left of the first cell centre (x = 4) it clamps to cell 0
    assert torch.allclose(f[0, 0, 0, 7:9].mean(), torch.tensor(0.5), atol=1e-6)  # between centres 3.5 and 11.5


def test_affine_head_starts_at_identity_and_a_constant_shift_translates():
    head = A.AffineAlign(5, 4, max_shift=2.0)
    assert torch.equal(head.cell_shift(torch.randn(3, 5, 4, 4)), torch.zeros(3, 2, 4, 4))
    x = torch.randn(3, 2, 32, 32)
    assert torch.allclose(head(x, torch.randn(3, 5, 4, 4))[0], x, atol=1e-5)
    with torch.no_grad():  # bias only: dx = max_shift * tanh(b) = 1 px everywhere -> reads the right neighbour
        head.head.bias.copy_(torch.tensor([0.0, float(np.arctanh(0.5))]))
    out, shift = head(x, torch.randn(3, 5, 4, 4))
    assert torch.allclose(shift[:, 1], torch.ones(3, 4, 4), atol=1e-6)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        A.AffineAlign(5, 4, window=4)


def test_affine_alignment_does_not_depend_on_the_tile():
    """A crop of the map warps as the whole map does, away from the crop's edges (no tile-wide statistic)."""
    torch.manual_seed(3)
    head = A.AffineAlign(6, 8, max_shift=3.0, window=5)
    with torch.no_grad():
        head.head.weight.normal_(0, 1.0)
    ctx = torch.randn(1, 6, 24, 24)
    x = torch.randn(1, 2, 192, 192)
    whole, shift_whole = head(x, ctx)
    # a tile of 10 x 10 cells starting at cell (6, 8): its cells 2 .. 7 see the same 5 x 5 windows
    tile, shift_tile = head(x[..., 48:128, 64:144], ctx[..., 6:16, 8:18])
    assert torch.allclose(shift_tile[..., 2:8, 2:8], shift_whole[..., 8:14, 10:16], atol=1e-6)
    assert shift_whole.abs().max() > 0.5  # the warp is active
    inner = (slice(None), slice(None), slice(24, 56), slice(24, 56))  # 3 cells + max_shift from the edges
    assert torch.allclose(tile[inner], whole[..., 72:104, 88:120], atol=1e-4)  # float32 grid normalization


def test_deformable_conv_zero_offsets_is_plain_conv():
    torch.manual_seed(0)
    conv = A.DeformableConv2d(3, 5, guide_channels=2)
    x, guide = torch.randn(2, 3, 9, 7), torch.randn(2, 2, 9, 7)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    assert torch.allclose(conv(x, guide), ref, atol=1e-5)
    # every tap offset by +1 column = the plain conv of the input shifted one column left
    offsets = torch.zeros(2, 18, 9, 7)
    offsets[:, 1::2] = 1.0
    shifted = F.conv2d(x[..., 1:], conv.weight, conv.bias, padding=1)  # column j reads x[j .. j+2]
    assert torch.allclose(conv.deform(x, offsets)[..., 1:6], shifted[..., 1:6], atol=1e-5)


def test_plain_conv_mode_has_no_offset_branch():
    torch.manual_seed(0)
    conv = A.DeformableConv2d(3, 4, deformable=False)
    x = torch.randn(1, 3, 6, 6)
    assert not hasattr(conv, "offset")
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_flow_warp_and_smoothness():
    x = torch.arange(48.0).view(1, 1, 6, 8)
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 1] = 1.0  # dx = +1 pixel everywhere
    assert torch.allclose(A.warp(x, flow)[..., :-1], x[..., 1:], atol=1e-5)
    assert A.flow_smoothness(flow).item() == 0.0
    flow[0, 0, 2, 3] = 0.5
    assert A.flow_smoothness(flow).item() > 0
    field = A.DeformationField(2, 3)
    y, f = field(torch.randn(1, 2, 5, 5), torch.randn(1, 3, 5, 5))
    assert torch.equal(f, torch.zeros_like(f))


def test_parameter_count_close_to_unet():
    for width, depth in [(16, 3), (24, 3)]:
        mm, unet = n_params(M.MMNTLSR(C, width, depth)), n_params(UNet(C, width, depth))
        assert 0.7 <= mm / unet <= 1.3, (width, depth, mm, unet)


def test_registry_and_config():
    net = build_model({"name": "mmntlsr", "width": 4, "depth": 2, "modules": {"affine": False}}, C)
    assert isinstance(net, M.MMNTLSR) and net.affine is None and net.switches["fusion"]
    assert MODEL_DEFAULTS["mmntlsr"]["modules"] == M.DEFAULT_MODULES
    assert resolve_model_config({"name": "mmntlsr", "width": 4, "depth": 2})["modules"] == M.DEFAULT_MODULES
    assert input_multiple({"name": "mmntlsr", "width": 4, "depth": 2}) == 8
    assert input_multiple({"name": "mmntlsr", "width": 4, "depth": 4}) == 16
    with pytest.raises(ValueError, match="model.modules.*'?gan"):
        M.resolve_modules({"gan": True})
    with pytest.raises(ValueError, match="true/false"):
        M.resolve_modules({"affine": "yes"})
    with pytest.raises(ValueError, match="in_channels=5"):
        M.MMNTLSR(5)


def test_pool_target_and_multiscale_known_answers():
    t = torch.tensor([[[1.0, 3.0, float("nan"), float("nan")], [5.0, 7.0, float("nan"), float("nan")]]])
    pooled, ok = M.pool_target(t, 2)
    assert ok.tolist() == [[[[True, False]]]] and pooled[0, 0, 0, 0].item() == 4.0
    aux = {"multiscale": {2: torch.tensor([[[[4.0, 99.0]]]])}}
    assert M.multiscale_loss(aux, t).item() == 0.0  # the NaN block is ignored
    aux = {"multiscale": {2: torch.tensor([[[[6.0, 0.0]]]])}}
    assert M.multiscale_loss(aux, t).item() == pytest.approx(2.0)
    assert M.multiscale_loss({}, t).item() == 0.0


def test_auxiliary_losses_known_answers():
    inputs = torch.zeros(1, C, 2, 2)
    sat = CHANNELS.index("panda_saturated")
    inputs[0, sat] = torch.tensor([[1.0, 0.0], [float("nan"), 1.0]])
    target_z = torch.tensor([[[2.0, 1.0], [5.0, float("nan")]]])
    logit = torch.tensor([[[[20.0, -20.0], [0.0, 20.0]]]])
    bright = torch.tensor([[[[3.0, 9.0], [9.0, 9.0]]]])
    losses = M.auxiliary_losses({"sat_logit": logit, "bright": bright}, target_z, inputs)
    assert losses["saturation"].item() < 1e-6  # confident and right where the flag is finite
    assert losses["bright"].item() == pytest.approx(1.0)  # only the saturated pixel with a target: |3 - 2|
    assert M.auxiliary_losses({}, target_z, inputs) == {}
    z = M.target_log(torch.tensor([1e-5, float("nan")]))
    assert z[0].item() == pytest.approx(np.log(2.0)) and torch.isnan(z[1])


def test_losses_backprop_and_one_step_reduces_loss():
    from pandafine.training.train import masked_l1

    scenes = [make_scene(16, seed=s) for s in (0, 1)]
    x = torch.from_numpy(np.stack([s[0] for s in scenes]))
    target = torch.from_numpy(np.stack([s[1] for s in scenes]))
    target[0, :3, :3] = float("nan")
    x[:, CHANNELS.index("panda_saturated"), :8, :8] = 1.0  # a saturated block
    mean = torch.nanmean(x.transpose(0, 1).reshape(C, -1), dim=1).view(1, C, 1, 1)
    std = x.transpose(0, 1).reshape(C, -1).nan_to_num(0).std(dim=1).clamp(min=1e-6).view(1, C, 1, 1)
    xn = ((x - mean) / std).nan_to_num(0.0)
    # width 8: at width 4 the 1 km affine context of a 2x2-cell scene can be all dead ReLUs (zero gradient)
    model = tiny(width=8, depth=2).train()
    perturb_alignment(model)  # non-zero flows: the smoothness term is active

    def total():
        z, aux = model(xn)
        terms = M.loss_terms(aux, M.target_log(target), x)
        extra = M.weighted_extra_loss(aux, target, x, {"smoothness": 0.1})
        return masked_l1(z, target.unsqueeze(1)) + extra, terms

    loss, terms = total()
    assert set(terms) == {"saturation", "bright", "multiscale", "smoothness", "floor"}
    assert terms["floor"].item() == 0  # a fresh model's pre-softplus map is far above the floor
    assert all(torch.isfinite(v) and v.item() > 0 for k, v in terms.items() if k != "floor")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    loss.backward()
    for name in ("aux_head.1.weight", "ms_heads.2.weight", "ms_heads.4.weight", "panda_levels.1.field.flow.weight",
                 "affine.head.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    opt.step()
    with torch.no_grad():
        after, _ = total()
    assert after.item() < loss.item()
    with pytest.raises(ValueError, match="loss_weights.*nope"):
        M.weighted_extra_loss({}, target, x, {"nope": 1.0})


@pytest.mark.slow
def test_onnx_export_parity(tmp_path):
    """The deployable wrapper around MMNTLSR exports (dynamo, opset 18, dynamic H/W) and onnxruntime matches.

    Slow (the dynamo export of the ~60 grid_sample nodes takes one to three minutes on 2 busy cores).
    """
    import onnxruntime as ort

    from pandafine.models.wrapper import PandaFineNet
    from pandafine.training.export import _export_graph

    torch.manual_seed(0)
    net = perturb_alignment(tiny(width=4, depth=3, seed=3), scale=0.5)  # every part (all on by default)
    assert all(net.switches.values())
    with torch.no_grad():
        net.sr_head[-1].bias.fill_(2.0)  # z > 0 mostly: the radiance (expm1(max(z, 0))) is not clamped to 0
    model = PandaFineNet(net, [0.0] * C, [1.0] * C).eval()
    example = blocky_input(2, 16, 16).numpy()
    path = tmp_path / "mmntlsr.onnx"
    _export_graph(model, example, path, 18)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, (b, h, w) in enumerate([(1, 64, 64), (2, 32, 48)]):
        x = blocky_input(b, h, w, seed=seed + 1).numpy()
        x[0, 3, :4, :4] = np.nan  # a nodata hole
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(["radiance"], {"inputs": x})[0]
        assert got.shape == ref.shape == (b, 1, h, w)
        peak = np.max(np.abs(ref))
        assert peak > 0 and np.mean(ref > 0) > 0.5 and np.isfinite(got).all()
        assert np.max(np.abs(got - ref)) <= 1e-4 * peak, ((b, h, w), np.max(np.abs(got - ref)), peak)


def test_floor_term_pushes_a_collapsed_output_back_up():
    """With u = a + b far below the floor, z ~ 0 and the L1's slope e**u vanishes; the floor term does not."""
    model = tiny().train()
    x = blocky_input(2, 32, 32)
    with torch.no_grad():
        model.intensity_head.bias.fill_(-20.0)
    z, aux = model(x)
    assert z.max().item() < 1e-5
    floor = M.loss_terms(aux, torch.zeros(2, 1, 32, 32), x)["floor"]
    assert floor.item() > 10  # about -6 - (-20 + b)
    floor.backward()
    assert model.intensity_head.bias.grad.item() == pytest.approx(-1.0, abs=1e-3)  # descent raises the bias
