"""Calibrated ensembles: recentring, scaling, clamping and antithetic noise, on known answers."""

import numpy as np
import pytest
import torch

from pandafine.inference import ensemble as EN


def test_combine_recentres_on_the_base_scales_and_clamps():
    z = np.array([[1.0, 0.2], [3.0, 0.6]])          # 2 members, 2 pixels: means 2.0 and 0.4
    base = np.array([2.5, -1.0])
    out = EN.combine_members(z, base, EN.EnsembleSpec(2, recentre=True, scale=2.0))
    # pixel 0: 2.5 + 2 * (-1, +1); pixel 1: the base is dark (z < 0 -> 0): every member 0
    np.testing.assert_allclose(out, [[0.5, 0.0], [4.5, 0.0]])
    # without recentring the members keep their own mean; scale 1: the members (clamped) themselves
    np.testing.assert_allclose(EN.combine_members(z, base, EN.EnsembleSpec(2)), z)
    np.testing.assert_allclose(EN.combine_members(-z, base, EN.EnsembleSpec(2)), 0.0)
    np.testing.assert_allclose(EN.combine_members(z, base, EN.EnsembleSpec(2, scale=0.5)), [[1.5, 0.3], [2.5, 0.5]])
    # raw samples far below 0 add no spread where the base is dark: their clamped values are all 0
    np.testing.assert_allclose(EN.combine_members([[-3.0], [-1.0]], [0.1], EN.EnsembleSpec(2, recentre=True, scale=3)),
                               [[0.1], [0.1]])


def test_the_last_clamp_keeps_the_members_mean():
    """Centre 0.2, deviations -0.5 and +0.5: a plain clamp gives (0, 0.7), mean 0.35; shifted by -0.3 they are
    (0, 0.4), mean 0.2. On random cases the mean is the centre to rounding, and the shift is never positive."""
    np.testing.assert_allclose(EN.mean_preserving_shift(np.array([0.2]), np.array([[-0.5], [0.5]])), [-0.3])
    out = EN.combine_members([[0.0], [1.0]], [0.2], EN.EnsembleSpec(2, recentre=True))
    np.testing.assert_allclose(out, [[0.0], [0.4]])
    rng = np.random.default_rng(0)
    centre = rng.uniform(0.0, 1.0, 500)
    d = rng.normal(0.0, 0.5, (8, 500))
    d -= d.mean(axis=0)
    delta = EN.mean_preserving_shift(centre, d)
    np.testing.assert_allclose(np.maximum(centre + delta + d, 0).mean(axis=0), centre, atol=1e-12)
    assert delta.max() <= 0 and (delta < 0).mean() > 0.5
    members = EN.combine_members(rng.normal(0.3, 0.4, (16, 500)), centre, EN.EnsembleSpec(16, recentre=True, scale=1.7))
    np.testing.assert_allclose(members.mean(axis=0), centre, atol=1e-12)
    assert members.min() >= 0


def test_antithetic_members_draw_opposite_noise_in_pairs():
    spec = EN.EnsembleSpec(4, seed=10, antithetic=True)
    assert [spec.member_noise(k) for k in range(4)] == [(10, 1.0), (10, -1.0), (11, 1.0), (11, -1.0)]
    assert [EN.EnsembleSpec(3, seed=10).member_noise(k) for k in range(3)] == [(10, 1.0), (11, 1.0), (12, 1.0)]

    def make(seed):
        gen = torch.Generator().manual_seed(seed)
        return lambda step, like: torch.randn(like.shape, generator=gen)

    like = torch.zeros(1, 1, 4, 4)
    a, b, c, _ = (fn(1, like) for fn in EN.member_noise_fns(spec, make))
    assert torch.equal(a, -b) and not torch.equal(a.abs(), c.abs())
    # for a map linear in the noise, the mean of antithetic pairs is exactly the noise-free value
    members = np.stack([2.0 + 0.3 * fn(1, like).numpy() for fn in EN.member_noise_fns(spec, make)])
    np.testing.assert_allclose(members.mean(axis=0), 2.0, atol=1e-7)


def test_spec_errors_and_file_round_trip(tmp_path):
    with pytest.raises(ValueError, match="must be even"):
        EN.EnsembleSpec(3, antithetic=True)
    with pytest.raises(ValueError, match="positive number"):
        EN.EnsembleSpec(4, scale=0.0)
    assert EN.EnsembleSpec(4).plain and not EN.EnsembleSpec(4, recentre=True).plain
    (tmp_path / "checkpoint.pt").write_bytes(b"weights")
    assert EN.read_ensemble_file(tmp_path / "checkpoint.pt", 8) is None
    EN.write_ensemble_file(tmp_path, EN.EnsembleSpec(16, seed=3, antithetic=True, recentre=True, scale=1.4),
                           fitted_on="val")
    got = EN.read_ensemble_file(tmp_path / "checkpoint.pt", 8)   # the member count is the caller's
    assert got == EN.EnsembleSpec(8, seed=3, antithetic=True, recentre=True, scale=1.4)
    with pytest.raises(ValueError, match=r"ensemble\.json: .*must be even"):
        EN.read_ensemble_file(tmp_path / "checkpoint.pt", 5)
    (tmp_path / "checkpoint.pt").write_bytes(b"other weights")
    with pytest.raises(ValueError, match="made for another checkpoint"):
        EN.read_ensemble_file(tmp_path / "checkpoint.pt", 8)
