"""Training: loss goes down, determinism, resume, early stopping, patch reading."""

import csv

import numpy as np
import pytest
import torch

from fake_tiles import stage_config, write_fake_train_zarr
from pandafine.models.checkpoint import read_checkpoint
from pandafine.models.registry import build_wrapper, load_trained_model
from pandafine.tiles.store import PatchStore
from pandafine.training import train as T
from repo_paths import TESTS


@pytest.fixture(scope="module")
def train_zarr(tmp_path_factory):
    return write_fake_train_zarr(tmp_path_factory.mktemp("tiles") / "train.zarr")


@pytest.fixture(scope="module")
def reference(train_zarr, tmp_path_factory):
    """An uninterrupted 4-epoch run."""
    out = tmp_path_factory.mktemp("ref")
    T.train_model(stage_config(epochs=4), train_zarr, out, progress=False)
    return out


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_loss_and_writes_history(reference):
    ck = read_checkpoint(reference / "checkpoint.pt")
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
    model, _ = load_trained_model(reference)
    assert not model.training


def test_same_seed_same_weights(train_zarr, reference, tmp_path):
    T.train_model(stage_config(epochs=4), train_zarr, tmp_path, progress=False)
    a = read_checkpoint(reference / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "checkpoint.pt")
    assert _states_equal(a["model_state"], b["model_state"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_resume_after_interruption_matches_uninterrupted(train_zarr, reference, tmp_path):
    cfg = stage_config(epochs=4)
    T.train_model(cfg, train_zarr, tmp_path, stop_after=2, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()  # the workflow output appears only when finished
    mid = read_checkpoint(tmp_path / "resume.pt")
    assert not mid["finished"] and mid["epoch"] == 2 and mid["stop_reason"] == "interrupted"
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3
    (tmp_path / "history.csv").unlink()  # Snakemake deletes a failed job's outputs; resume.pt is not one
    T.train_model(cfg, train_zarr, tmp_path, progress=False)
    assert not (tmp_path / "resume.pt").exists()
    a = read_checkpoint(reference / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "checkpoint.pt")
    assert b["finished"] and b["epoch"] == 4
    assert _states_equal(a["model_state"], b["model_state"])
    assert _states_equal(a["resume"]["model_state"], b["resume"]["model_state"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


_KILL_MID_EPOCH = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from fake_tiles import stage_config
from pandafine.tiles.store import PatchStore
from pandafine.training import train as T

calls = {{"n": 0}}
real = PatchStore.iter_batches

def iter_batches(self, idx, batch_size):
    for i, item in enumerate(real(self, idx, batch_size)):
        if len(idx) == {n_train} and i == 2:  # third training batch of an epoch
            calls["n"] += 1
            if calls["n"] == 3:  # epoch 3: killed, no clean-up of any kind
                os.kill(os.getpid(), signal.SIGKILL)
        yield item

PatchStore.iter_batches = iter_batches
T.train_model(stage_config(epochs=4), {zarr!r}, {out!r}, progress=False)
"""


def test_killed_mid_epoch_then_resumed_matches_uninterrupted(train_zarr, reference, tmp_path):
    """A process killed (SIGKILL) in the middle of epoch 3 resumes from epoch 2's state: same final weights."""
    import signal
    import subprocess
    import sys

    store = PatchStore(train_zarr)
    n_train = int(store.with_target(store.indices("train")).size)
    assert n_train > 2 * stage_config()["train"]["batch_size"]  # epoch 3 has a third batch to die in
    code = _KILL_MID_EPOCH.format(tests=str(TESTS), n_train=n_train, zarr=str(train_zarr),
                                  out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (tmp_path / "checkpoint.pt").exists()
    mid = read_checkpoint(tmp_path / "resume.pt")
    assert mid["epoch"] == 2 and not mid["finished"]
    T.train_model(stage_config(epochs=4), train_zarr, tmp_path, progress=False)
    a = read_checkpoint(reference / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "checkpoint.pt")
    assert b["finished"] and b["epoch"] == 4
    assert _states_equal(a["model_state"], b["model_state"])
    assert _states_equal(a["resume"]["model_state"], b["resume"]["model_state"])


def test_shift_channels_known_answer():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    out = T.shift_channels(x, [(1, 0), (0, -2)], [0, 2])
    # patch 0: channels 0 and 2 moved down one row (first row replicated), channel 1 untouched
    assert np.array_equal(out[0, 0], np.vstack([x[0, 0, :1], x[0, 0, :3]]))
    assert np.array_equal(out[0, 2], np.vstack([x[0, 2, :1], x[0, 2, :3]]))
    assert np.array_equal(out[0, 1], x[0, 1])
    # patch 1: moved two columns left (last column replicated)
    assert np.array_equal(out[1, 0], np.hstack([x[1, 0, :, 2:], x[1, 0, :, 3:], x[1, 0, :, 3:]]))
    assert np.array_equal(T.shift_channels(x, [(0, 0), (0, 0)], [0, 1, 2]), x)


def test_shift_augment_and_warmup_reach_training(train_zarr, reference, tmp_path):
    cfg = stage_config(epochs=3, shift_augment=4, warmup_epochs=1)
    T.train_model(cfg, train_zarr, tmp_path, progress=False)
    ck = read_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["fingerprint"]["spec"]["shift_augment"] == 4 and ck["fingerprint"]["spec"]["warmup_epochs"] == 1
    lrs = [r["lr"] for r in ck["history"]]
    assert lrs[0] == pytest.approx(3e-3 / 2) and lrs[1] == pytest.approx(3e-3)  # warm-up, then the cosine
    ref = read_checkpoint(reference / "checkpoint.pt")
    assert not _states_equal(ref["model_state"], ck["model_state"])
    # without the options the fingerprint is the one of runs made before they existed
    assert "shift_augment" not in ref["fingerprint"]["spec"] and "warmup_epochs" not in ref["fingerprint"]["spec"]


def test_cosine_lr_warmup():
    assert [T.cosine_lr(1.0, e, 10, warmup=3) for e in range(3)] == pytest.approx([0.25, 0.5, 0.75])
    after = [T.cosine_lr(1.0, e, 10, warmup=3) for e in range(3, 10)]
    assert after[0] == 1.0 and after[-1] == pytest.approx(T.LR_FLOOR) and all(a > b for a, b in zip(after, after[1:]))
    assert [T.cosine_lr(1.0, e, 10) for e in range(10)] == [T.cosine_lr(1.0, e, 10, warmup=0) for e in range(10)]


def test_device_resolution_and_mixed_precision_on_cpu(train_zarr, tmp_path):
    assert T.resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert T.resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            T.resolve_device("cuda")
    with pytest.raises(ValueError, match="train.device"):
        T.resolve_device("tpu")
    # the autocast + scaler path of a CUDA run, exercised on the CPU in bfloat16
    store = PatchStore(train_zarr)
    spec = T.TrainSpec.from_config(stage_config())
    torch.manual_seed(0)
    model = build_wrapper(spec.model, store.channels, store.normalization)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    amp = T.MixedPrecision(enabled=True, device="cpu")
    idx = store.with_target(store.indices("train"))
    losses = [T.train_one_epoch(model, opt, store, idx, spec, e, amp) for e in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert amp.state_dict() == {}  # bfloat16 needs no gradient scaler


def test_finished_checkpoint_is_kept_and_other_config_retrains(train_zarr, reference, tmp_path):
    ck = reference / "checkpoint.pt"
    before = ck.stat().st_mtime_ns
    T.train_model(stage_config(epochs=4), train_zarr, reference, progress=False)
    assert ck.stat().st_mtime_ns == before
    # a checkpoint made with another learning rate is not resumed from
    import shutil

    shutil.copy(ck, tmp_path / "checkpoint.pt")
    T.train_model(stage_config(epochs=2, learning_rate=1e-3), train_zarr, tmp_path, progress=False)
    new = read_checkpoint(tmp_path / "checkpoint.pt")
    assert new["epoch"] == 2 and new["history"][0]["lr"] == pytest.approx(1e-3)


def test_early_stopping_keeps_best_weights(train_zarr, tmp_path, monkeypatch):
    monkeypatch.setattr(T, "psnr_log", lambda *a: 10.0)  # never improves after epoch 1
    T.train_model(stage_config(epochs=10, patience=2), train_zarr, tmp_path / "es", progress=False)
    ck = read_checkpoint(tmp_path / "es" / "checkpoint.pt")
    assert ck["stop_reason"] == "early_stopping" and ck["epoch"] == 3 and ck["best_epoch"] == 1
    T.train_model(stage_config(epochs=10, patience=2), train_zarr, tmp_path / "one", stop_after=1, progress=False)
    one = read_checkpoint(tmp_path / "one" / "resume.pt")
    assert _states_equal(ck["model_state"], one["resume"]["model_state"])
    assert not _states_equal(ck["model_state"], ck["resume"]["model_state"])


def test_patch_store_reads(train_zarr, tmp_path):
    mem = PatchStore(train_zarr)
    lazy = PatchStore(train_zarr, memory_limit=0)
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
        PatchStore(tmp_path / "bad.zarr")


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
