"""Training: loss goes down, determinism, resume, early stopping, patch reading."""

import csv

import numpy as np
import pytest
import torch

from fake_tiles import tiny_config, write_fake_train_zarr
from pandafine import train as T


@pytest.fixture(scope="module")
def train_zarr(tmp_path_factory):
    return write_fake_train_zarr(tmp_path_factory.mktemp("tiles") / "train.zarr")


@pytest.fixture(scope="module")
def reference(train_zarr, tmp_path_factory):
    """An uninterrupted 4-epoch run."""
    out = tmp_path_factory.mktemp("ref")
    T.train_model(tiny_config(epochs=4), train_zarr, out, progress=False)
    return out


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_loss_and_writes_history(reference):
    ck = T.read_checkpoint(reference / "checkpoint.pt")
    assert ck["finished"] and ck["stop_reason"] == "epochs" and ck["epoch"] == 4
    assert ck["channels"][0] == "panda" and len(ck["normalization"]["mean"]) == 11
    with open(reference / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(T.HISTORY_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0]
    psnrs = [float(r["val_psnr_log"]) for r in rows]
    assert ck["best_val_psnr_log"] == pytest.approx(max(psnrs), abs=1e-4)
    assert psnrs[ck["best_epoch"] - 1] == pytest.approx(max(psnrs), abs=1e-4)
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(3e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine decay
    model, _ = T.load_trained_model(reference)
    assert not model.training


def test_same_seed_same_weights(train_zarr, reference, tmp_path):
    T.train_model(tiny_config(epochs=4), train_zarr, tmp_path, progress=False)
    a = T.read_checkpoint(reference / "checkpoint.pt")
    b = T.read_checkpoint(tmp_path / "checkpoint.pt")
    assert _states_equal(a["model_state"], b["model_state"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_resume_after_interruption_matches_uninterrupted(train_zarr, reference, tmp_path):
    cfg = tiny_config(epochs=4)
    T.train_model(cfg, train_zarr, tmp_path, stop_after=2, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()  # the workflow output appears only when finished
    mid = T.read_checkpoint(tmp_path / "resume.pt")
    assert not mid["finished"] and mid["epoch"] == 2 and mid["stop_reason"] == "interrupted"
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3
    (tmp_path / "history.csv").unlink()  # Snakemake deletes a failed job's outputs; resume.pt is not one
    T.train_model(cfg, train_zarr, tmp_path, progress=False)
    assert not (tmp_path / "resume.pt").exists()
    a = T.read_checkpoint(reference / "checkpoint.pt")
    b = T.read_checkpoint(tmp_path / "checkpoint.pt")
    assert b["finished"] and b["epoch"] == 4
    assert _states_equal(a["model_state"], b["model_state"])
    assert _states_equal(a["resume"]["model_state"], b["resume"]["model_state"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_finished_checkpoint_is_kept_and_other_config_retrains(train_zarr, reference, tmp_path):
    ck = reference / "checkpoint.pt"
    before = ck.stat().st_mtime_ns
    T.train_model(tiny_config(epochs=4), train_zarr, reference, progress=False)
    assert ck.stat().st_mtime_ns == before
    # a checkpoint made with another learning rate is not resumed from
    import shutil

    shutil.copy(ck, tmp_path / "checkpoint.pt")
    T.train_model(tiny_config(epochs=2, learning_rate=1e-3), train_zarr, tmp_path, progress=False)
    new = T.read_checkpoint(tmp_path / "checkpoint.pt")
    assert new["epoch"] == 2 and new["history"][0]["lr"] == pytest.approx(1e-3)


def test_early_stopping_keeps_best_weights(train_zarr, tmp_path, monkeypatch):
    monkeypatch.setattr(T, "psnr_log", lambda *a: 10.0)  # never improves after epoch 1
    T.train_model(tiny_config(epochs=10, patience=2), train_zarr, tmp_path / "es", progress=False)
    ck = T.read_checkpoint(tmp_path / "es" / "checkpoint.pt")
    assert ck["stop_reason"] == "early_stopping" and ck["epoch"] == 3 and ck["best_epoch"] == 1
    T.train_model(tiny_config(epochs=10, patience=2), train_zarr, tmp_path / "one", stop_after=1, progress=False)
    one = T.read_checkpoint(tmp_path / "one" / "resume.pt")
    assert _states_equal(ck["model_state"], one["resume"]["model_state"])
    assert not _states_equal(ck["model_state"], ck["resume"]["model_state"])


def test_patch_store_reads(train_zarr, tmp_path):
    mem = T.PatchStore(train_zarr)
    lazy = T.PatchStore(train_zarr, memory_limit=0)
    idx = np.array([5, 1, 5, 30, 0])
    for a, b in zip(mem.read(idx), lazy.read(idx)):
        np.testing.assert_array_equal(a, b)
    x, t = mem.read(idx)
    assert x.shape == (5, 11, 16, 16) and t.shape == (5, 1, 16, 16)
    np.testing.assert_array_equal(x[0], x[2])
    sizes = [len(mem.indices(s)) for s in ("train", "val", "test")]
    assert sum(sizes) == len(mem) and min(sizes) > 0
    assert mem.fingerprint() == lazy.fingerprint()
    import zarr

    bad = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w")
    bad.create_array("inputs", shape=(2, 3, 4, 4), dtype="float32")
    with pytest.raises(ValueError, match="bad.zarr.*target"):
        T.PatchStore(tmp_path / "bad.zarr")


def test_dihedral_group():
    a = np.arange(12.0).reshape(1, 3, 4)[..., :3]  # (1, 3, 3), no symmetry
    images = [T.dihedral(a, k) for k in range(8)]
    assert np.array_equal(images[0], a)
    assert len({im.tobytes() for im in images}) == 8
    for k in range(8):  # every element has an inverse in the set
        assert any(np.array_equal(T.dihedral(images[k], j), a) for j in range(8))
    x = np.random.default_rng(0).random((2, 4, 5, 5))
    t = x[:, :1].copy()
    xa, ta = T.augment(x, t, [3, 6])
    np.testing.assert_array_equal(xa[:, :1], ta)  # inputs and target move together


def test_cosine_lr():
    assert T.cosine_lr(1.0, 0, 10) == 1.0
    assert T.cosine_lr(1.0, 9, 10) == pytest.approx(T.LR_FLOOR)
    assert T.cosine_lr(2.0, 0, 1) == 2.0
