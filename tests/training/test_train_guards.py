"""Training guards: a constant channel cannot blow up the inputs, a diverging run stops with a clear message."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.models.checkpoint import read_checkpoint
from pandafine.tiles.patches import channel_stats, constant_channels
from pandafine.tiles.store import PatchStore
from pandafine.training import train as T


def test_constant_channel_is_centred_not_scaled():
    x = np.random.default_rng(0).normal(5.0, 2.0, (6, 3, 8, 8)).astype(np.float32)
    x[:, 1] = 63.0          # e.g. PANDA saturated on every training patch
    x[:, 2, :, :4] = np.nan  # NaN ignored
    mean, std = channel_stats(x)
    assert mean[1] == 63.0 and std[1] == 1.0
    assert std[0] == pytest.approx(float(np.nanstd(x[:, 0])), rel=1e-6)
    assert constant_channels(x, ["a", "b", "c"]) == ["b"]
    # a value outside the training range stays a moderate input: (0 - 63) / 1, not (0 - 63) / 1e-6
    assert abs((0.0 - mean[1]) / std[1]) < 100


@pytest.mark.slow
def test_diverging_training_stops_naming_the_epoch_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    zarr_path = write_fake_train_zarr(tmp_path / "train.zarr")
    real = T.train_one_epoch

    def nan_in_epoch_2(model, opt, store, idx, spec, epoch, amp):
        loss = real(model, opt, store, idx, spec, epoch, amp)
        return math.nan if epoch == 1 else loss

    monkeypatch.setattr(T, "train_one_epoch", nan_in_epoch_2)
    with pytest.raises(ValueError, match=r"training diverged at epoch 2 \(train loss nan"):
        T.train_model(stage_config(epochs=3), zarr_path, tmp_path / "model", progress=False)
    assert not (tmp_path / "model" / "checkpoint.pt").exists()
    assert read_checkpoint(tmp_path / "model" / "resume.pt")["epoch"] == 1


def test_extreme_channels_names_the_blown_up_channel(tmp_path):
    zarr_path = write_fake_train_zarr(tmp_path / "train.zarr")
    store = PatchStore(zarr_path)
    store.normalization["std"][0] = 1e-6  # what the old floor gave a constant PANDA channel
    idx = store.indices("train")
    assert T.extreme_channels(store, idx) == [store.channels[0]]
