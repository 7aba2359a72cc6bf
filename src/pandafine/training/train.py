"""Train a model on the patches of ``results/tiles/train.zarr``.

Resumable and deterministic on CPU: the model is initialised from
``run.seed``; each epoch's shuffling and flip/rotation augmentation come from a
numpy generator seeded by ``(run.seed, epoch)``, so an epoch does not depend on
how the run got there. After every epoch the complete training state (weights,
optimizer, LR schedule, torch RNG, early-stopping counters, best weights,
history) is written atomically to ``resume.pt`` (not a workflow output, so it
survives Snakemake's clean-up of a killed job); the finished state goes to
``checkpoint.pt``. A run that finds a compatible state (same model/train
config, seed, channels, normalization and patches) continues from it and ends
with the same weights as an uninterrupted run (same thread count).

Loss: L1 on z = log1p(L / RADIANCE_REF) over the pixels with a finite target;
the generative models (diffusion, flow) bring their own denoising / velocity
loss (:func:`batch_loss`), and are validated on samples of their configured sampler.
Selection: validation PSNR on z (data range = max - min of the true z over the
validation split), early stopping after ``train.patience`` epochs without
improvement; ``checkpoint.pt["model_state"]`` always holds the best weights.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from pandafine.core.atomic import write_text_atomic
from pandafine.core.json_records import canonical_json
from pandafine.core.metrics import psnr
from pandafine.core.runtime import configure_torch
from pandafine.core.scaling import log_to_radiance, radiance_to_log
from pandafine.models import resolve_model_config
from pandafine.models.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME, read_checkpoint, save_checkpoint
from pandafine.models.mmntlsr import weighted_extra_loss
from pandafine.models.registry import build_wrapper
from pandafine.tiles.store import DEFAULT_MEMORY_LIMIT, PatchStore

log = logging.getLogger(__name__)

#: Per-epoch resume state of an unfinished run. Not a workflow output, so it survives Snakemake
#: deleting the outputs of a failed or killed train job; removed once training finishes.
RESUME_NAME = "resume.pt"
HISTORY_NAME = "history.csv"
HISTORY_COLUMNS = ("epoch", "train_loss", "val_psnr_log", "lr", "seconds")
#: Final learning rate of the cosine schedule, as a fraction of ``train.learning_rate``.
LR_FLOOR = 0.01
#: Channels moved by ``train.shift_augment`` (PANDA and its saturation flag).
SHIFTED_CHANNELS = ("panda", "panda_saturated")
#: Values of ``train.device``.
DEVICES = ("auto", "cpu", "cuda")


# --------------------------------------------------------------------------- pure helpers

@dataclass(frozen=True)
class TrainSpec:
    """Training parameters read from the config (``run.seed``, ``model``, ``train``)."""

    seed: int
    model: Mapping[str, Any]
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    #: PANDA channels translated by up to this many pixels per axis (0: off).
    shift_augment: int = 0
    #: Epochs of linear learning-rate warm-up before the cosine schedule.
    warmup_epochs: int = 0
    #: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; checked by :func:`resolve_device`.
    device: str = "auto"
    #: Mixed precision (autocast + gradient scaling) when training on CUDA.
    amp: bool = True
    #: Weight of :func:`cell_light_loss` in the training loss (0: off), and its cell edge in pixels.
    light_weight: float = 0.0
    light_cell: int = 8

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "TrainSpec":
        tr = cfg["train"]
        return cls(seed=int(cfg["run"]["seed"]), model=resolve_model_config(cfg["model"]), epochs=int(tr["epochs"]),
                   batch_size=int(tr["batch_size"]), learning_rate=float(tr["learning_rate"]),
                   patience=int(tr["patience"]), shift_augment=int(tr.get("shift_augment", 0)),
                   warmup_epochs=int(tr.get("warmup_epochs", 0)), device=str(tr.get("device", "auto")),
                   amp=bool(tr.get("amp", True)), light_weight=float(tr.get("light_weight", 0.0)),
                   light_cell=int(cfg.get("grid", {}).get("factor", 8)))

    def as_dict(self) -> dict[str, Any]:
        """What identifies a training run (for resuming); the device is not part of it."""
        out = {"seed": self.seed, "model": dict(self.model), "epochs": self.epochs, "batch_size": self.batch_size,
               "learning_rate": self.learning_rate, "patience": self.patience}
        # only when set, so that runs made before these options existed keep their identity
        if self.shift_augment:
            out["shift_augment"] = self.shift_augment
        if self.warmup_epochs:
            out["warmup_epochs"] = self.warmup_epochs
        if self.light_weight:
            out["light_weight"] = self.light_weight
            out["light_cell"] = self.light_cell
        return out


def resolve_device(name: str) -> str:
    """``train.device`` -> ``"cpu"`` or ``"cuda"``: ``auto`` takes CUDA when PyTorch sees a GPU.

    ``cuda`` without a usable GPU is an error (not a silent fall-back to the CPU).
    """
    import torch

    if name not in DEVICES:
        raise ValueError(f"key 'train.device': {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but PyTorch sees no CUDA GPU "
                           f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use 'auto' or 'cpu'")
    return name


class MixedPrecision:
    """Autocast + gradient scaling for one device, or plain float32 when disabled.

    Parameters
    ----------
    enabled : bool
        Use mixed precision.
    device : {"cpu", "cuda"}
        Device type of autocast. On CUDA the autocast type is bfloat16 where the
        GPU supports it (no scaler needed), else float16 with a
        ``torch.amp.GradScaler``; on the CPU bfloat16 (used by the tests, slow
        on most CPUs, so :func:`train_model` enables it on CUDA only).
    """

    def __init__(self, enabled: bool, device: str = "cpu") -> None:
        import torch

        self.enabled, self.device = bool(enabled), device
        if device == "cuda" and self.enabled and not torch.cuda.is_bf16_supported():
            self.dtype = torch.float16
        else:
            self.dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler(device, enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self):
        import torch

        return torch.autocast(self.device, dtype=self.dtype, enabled=self.enabled)

    def step(self, loss, opt) -> None:
        """Backward pass and optimizer step (through the scaler when float16)."""
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler.is_enabled() else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(dict(state))


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """Apply element ``k`` (0..7) of the square's symmetry group to the last two axes.

    ``k % 4`` quarter turns, then a left-right flip if ``k >= 4``; ``k = 0`` is the identity.
    """
    if not 0 <= k < 8:
        raise ValueError(f"dihedral: k must be in 0..7, got {k}")
    out = np.rot90(a, k % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return out


def augment(x: np.ndarray, t: np.ndarray, ks) -> tuple[np.ndarray, np.ndarray]:
    """Apply :func:`dihedral` element ``ks[i]`` to patch ``i`` of inputs ``x`` and target ``t``."""
    xo = np.stack([dihedral(xi, int(k)) for xi, k in zip(x, ks)])
    to = np.stack([dihedral(ti, int(k)) for ti, k in zip(t, ks)])
    return np.ascontiguousarray(xo), np.ascontiguousarray(to)


def shift_channels(x: np.ndarray, shifts, channels) -> np.ndarray:
    """Translate ``channels`` of each patch ``x[i]`` (C, H, W) by ``shifts[i] = (drow, dcol)`` pixels.

    ``out[i, c, r, q] = x[i, c, r - drow, q - dcol]`` with indices clamped to the
    patch (edges replicated); the other channels are copied unchanged.
    """
    out = np.array(x, copy=True)
    h, w = x.shape[-2:]
    ch = list(channels)
    for i, (dr, dc) in enumerate(shifts):
        rows = np.clip(np.arange(h) - int(dr), 0, h - 1)
        cols = np.clip(np.arange(w) - int(dc), 0, w - 1)
        out[i, ch] = x[i, ch][:, rows][:, :, cols]
    return out


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's shuffling and augmentation (independent of earlier epochs)."""
    return np.random.default_rng([int(seed), int(epoch)])


def cosine_lr(base_lr: float, epoch: int, epochs: int, floor: float = LR_FLOOR, warmup: int = 0) -> float:
    """Learning rate of (0-based) ``epoch``: cosine from ``base_lr`` to ``floor * base_lr`` over ``epochs``.

    With ``warmup`` > 0 the first ``warmup`` epochs ramp up linearly
    (``base_lr * (epoch + 1) / (warmup + 1)``); the cosine then runs from
    ``base_lr`` at epoch ``warmup`` to the floor at the last epoch.
    """
    if epoch < warmup:
        return base_lr * (epoch + 1) / (warmup + 1)
    span = epochs - 1 - warmup
    if span <= 0:
        return base_lr
    frac = min(epoch - warmup, span) / span
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))


def psnr_log(z_pred: np.ndarray, z_true: np.ndarray, data_range: float) -> float:
    """PSNR on the log scale over finite ``z_true`` pixels (see :func:`pandafine.core.metrics.psnr`)."""
    return psnr(z_pred, z_true, data_range)


# --------------------------------------------------------------------------- torch pieces

@contextlib.contextmanager
def _deterministic_torch(warn_only: bool = False) -> Iterator[None]:
    """Deterministic algorithms inside the block; ``warn_only`` where some have no deterministic kernel.

    On CUDA, grid_sample's backward (MMNTLSR's alignment) has none, so a GPU run
    warns instead of failing and is reproducible only up to such kernels.
    """
    import os

    import torch

    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if warn_only:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def masked_l1(z_pred, target):
    """Mean ``|z_pred - z(target)|`` over pixels with a finite target radiance (0 if there are none)."""
    import torch

    valid = torch.isfinite(target)
    z_true = radiance_to_log(torch.where(valid, target, torch.zeros_like(target)))
    err = torch.where(valid, (z_pred - z_true).abs(), torch.zeros_like(z_pred))
    return err.sum() / valid.sum().clamp(min=1)


def cell_light_loss(z_pred, target, cell: int):
    """Light term: L1 of z between the predicted and the target mean radiance of each 1 km cell.

    Over ``cell x cell`` pixel cells (pixels without a target count in neither),
    ``|z(mean L_pred) - z(mean L_true)|``, averaged over cells weighted by their
    valid pixels. The pixel L1 on z pulls each pixel to the median of what its
    inputs allow, which for skewed radiance is below the mean, so summed light
    is lost; matching each cell's mean radiance takes the light back without
    giving up the log scale (bounded gradients, unlike an L1 on radiance). 0
    when no cell has a target.
    """
    import torch
    import torch.nn.functional as F

    valid = torch.isfinite(target)
    pred = torch.where(valid, log_to_radiance(z_pred), torch.zeros_like(z_pred))
    true = torch.where(valid, target, torch.zeros_like(target))
    n = F.avg_pool2d(valid.to(z_pred.dtype), cell)  # fraction of each cell with a target
    has = n > 0
    if not bool(has.any()):
        return torch.zeros((), dtype=z_pred.dtype, device=z_pred.device)
    safe = n.clamp(min=1e-6)
    mp = F.avg_pool2d(pred, cell) / safe
    mt = F.avg_pool2d(true, cell) / safe
    err = (radiance_to_log(mp) - radiance_to_log(mt)).abs()
    return (err * n)[has].sum() / n[has].sum()


def predict_log(model, store: PatchStore, idx, batch_size: int) -> np.ndarray:
    """z = log1p(L / RADIANCE_REF) predicted by ``model`` (a PandaFineNet) for patches ``idx``: (k, P, P) float32."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for _, x, _ in store.iter_batches(idx, batch_size):
            xt = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
            out.append(model.log_radiance(xt)[:, 0].float().cpu().numpy())
    model.train(was_training)
    p = store.patch
    return np.concatenate(out) if out else np.zeros((0, p, p), np.float32)


def true_log(store: PatchStore, idx) -> np.ndarray:
    """True z of patches ``idx`` (k, P, P), NaN where the target is not finite."""
    t = store.read_target(idx)[:, 0]
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(t), radiance_to_log(np.nan_to_num(t)), np.nan).astype(np.float32)


# --------------------------------------------------------------------------- history and state copies


def _history_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for r in rows:
        w.writerow([r["epoch"], f"{r['train_loss']:.6g}", f"{r['val_psnr_log']:.6g}", f"{r['lr']:.6g}",
                    f"{r['seconds']:.3f}"])
    return buf.getvalue()


def _clone_state(module) -> dict:
    """A CPU copy of ``module``'s state (checkpoints load on any machine)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- training

def batch_loss(model, xt, tt, spec: TrainSpec):
    """Training loss of one batch: raw inputs ``xt`` (B, C, P, P), target radiance ``tt`` (B, 1, P, P).

    A network with a method ``training_loss(normalized inputs, target radiance)``
    (the generative models: diffusion, flow) supplies its own objective; otherwise
    L1 on z, plus the extra terms of a model that returns ``(z, aux)`` in training mode,
    plus ``train.light_weight`` times :func:`cell_light_loss`.
    """
    own_loss = getattr(model.net, "training_loss", None)
    if own_loss is not None:
        return own_loss(model.normalize(xt), tt)
    out = model.log_radiance(xt)
    z, aux = out if isinstance(out, tuple) else (out, None)  # (z, aux): auxiliary training outputs (mmntlsr)
    loss = masked_l1(z, tt)
    if aux is not None:
        loss = loss + weighted_extra_loss(aux, tt, xt, spec.model.get("loss_weights"))
    if spec.light_weight:
        loss = loss + spec.light_weight * cell_light_loss(z, tt, spec.light_cell)
    return loss


def train_one_epoch(model, opt, store: PatchStore, idx: np.ndarray, spec: TrainSpec, epoch: int,
                    amp: "MixedPrecision | None" = None) -> float:
    """One pass over the training patches ``idx`` (order and augmentation from :func:`epoch_rng`).

    Augmentation: one of the 8 dihedral transforms per patch and, with
    ``train.shift_augment`` = s > 0, a translation of the PANDA channels by
    integers drawn from [-s, s] pixels per axis (edges replicated), which
    simulates PANDA geolocation error. ``amp`` (default: off) runs the forward
    pass under autocast with a gradient scaler (:class:`MixedPrecision`).

    Returns the patch-weighted mean training loss (:func:`batch_loss`).
    """
    import torch

    amp = amp if amp is not None else MixedPrecision(enabled=False)
    device = next(model.parameters()).device
    shifted = [store.channels.index(c) for c in SHIFTED_CHANNELS if c in store.channels]

    rng = epoch_rng(spec.seed, epoch)
    order = rng.permutation(idx)
    losses, weights = [], []
    model.train()
    for _, x, t in store.iter_batches(order, spec.batch_size):
        x, t = augment(x, t, rng.integers(0, 8, size=len(x)))
        if spec.shift_augment:
            x = shift_channels(x, rng.integers(-spec.shift_augment, spec.shift_augment + 1, size=(len(x), 2)),
                               shifted)
        xt = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
        tt = torch.from_numpy(t).to(device)
        with amp.autocast():
            loss = batch_loss(model, xt, tt, spec)
        opt.zero_grad(set_to_none=True)
        amp.step(loss, opt)
        losses.append(loss.item())
        weights.append(len(x))
    return float(np.average(losses, weights=weights))


@dataclass
class LoopState:
    """Where training stands: what ``checkpoint.pt`` records besides the torch states."""

    best_state: dict
    epoch: int = 0
    best_val_psnr_log: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    finished: bool = False
    stop_reason: str | None = None

    @classmethod
    def from_checkpoint(cls, ck: Mapping[str, Any]) -> "LoopState":
        return cls(best_state=ck["model_state"], epoch=int(ck["epoch"]),
                   best_val_psnr_log=float(ck["best_val_psnr_log"]), best_epoch=int(ck["best_epoch"]),
                   bad_epochs=int(ck["resume"]["bad_epochs"]), history=list(ck["history"]),
                   finished=bool(ck["finished"]), stop_reason=ck["stop_reason"])

    def end_epoch(self, score: float, has_val: bool, row: Mapping[str, Any], spec: TrainSpec, model) -> None:
        """Record the epoch just trained (validation ``score``): best weights, early stopping, the end."""
        self.epoch += 1
        if not has_val or score > self.best_val_psnr_log:
            self.best_val_psnr_log = score if has_val else -math.inf
            self.best_epoch, self.bad_epochs, self.best_state = self.epoch, 0, _clone_state(model)
        else:
            self.bad_epochs += 1
        self.history.append(dict(row))
        if self.bad_epochs >= spec.patience:
            self.finished, self.stop_reason = True, "early_stopping"
        elif self.epoch >= spec.epochs:
            self.finished, self.stop_reason = True, "epochs"


@dataclass(frozen=True)
class ValidationSet:
    """The validation patches with a target, their true z and its data range (for PSNR)."""

    idx: np.ndarray
    z: np.ndarray
    data_range: float

    @classmethod
    def of(cls, store: PatchStore) -> "ValidationSet":
        idx = store.with_target(store.indices("val"))
        if idx.size == 0:
            log.warning("%s: no validation patch with a target; no early stopping, the last epoch is kept",
                        store.path)
        z = true_log(store, idx)
        data_range = float(np.nanmax(z) - np.nanmin(z)) if idx.size else float("nan")
        if idx.size and not data_range > 0:
            log.warning("%s: validation target is constant; PSNR uses data range 1", store.path)
            data_range = 1.0
        return cls(idx, z, data_range)

    def score(self, model, store: PatchStore, batch_size: int) -> float:
        """PSNR(log) of ``model`` on these patches (NaN without any)."""
        if not self.idx.size:
            return float("nan")
        return psnr_log(predict_log(model, store, self.idx, batch_size), self.z, self.data_range)

    def selection_score(self, model, store: PatchStore, batch_size: int, psnr: float) -> float:
        """What picks the best epoch (higher is better): ``psnr``, or minus the mean validation loss for a
        network with ``selects_by_loss`` (the heteroscedastic head, whose spread PSNR does not see; a
        generative model with ``model.selection: loss``). The loss's random draws (noise, times) come
        from a generator seeded with 0 inside :func:`torch.random.fork_rng`: the same every epoch,
        and training's random state is left as it was."""
        if not (self.idx.size and getattr(model.net, "selects_by_loss", False)):
            return psnr
        import torch

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, n = 0.0, 0
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            for sel, x, t in store.iter_batches(self.idx, batch_size):
                xt, tt = torch.from_numpy(x).to(device), torch.from_numpy(t).to(device)
                total += float(model.net.training_loss(model.normalize(xt), tt)) * sel.size
                n += sel.size
        model.train(was_training)
        return -total / n


@dataclass
class Optimization:
    """The model and what updates it: optimizer, learning-rate schedule, mixed-precision scaler."""

    model: Any
    opt: Any
    sched: Any
    amp: MixedPrecision

    @classmethod
    def build(cls, spec: TrainSpec, store: PatchStore, device: str) -> "Optimization":
        """Seeded initial weights (``run.seed``), Adam and the warm-up + cosine schedule."""
        import torch

        torch.manual_seed(spec.seed)
        model = build_wrapper(spec.model, store.channels, store.normalization)
        model = model.to(device=device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: cosine_lr(1.0, e, spec.epochs, warmup=spec.warmup_epochs))
        return cls(model, opt, sched, MixedPrecision(enabled=spec.amp and device == "cuda", device=device))

    def restore(self, ck: Mapping[str, Any]) -> None:
        """Load a checkpoint's resume state into model, optimizer, scheduler, scaler and torch's RNG."""
        import torch

        res = ck["resume"]
        self.model.load_state_dict(res["model_state"])
        self.opt.load_state_dict(res["optimizer_state"])
        self.sched.load_state_dict(res["scheduler_state"])
        self.amp.load_state_dict(res.get("scaler_state") or {})
        torch.set_rng_state(res["torch_rng_state"])

    def resume_state(self) -> dict[str, Any]:
        import torch

        return {"model_state": _clone_state(self.model), "optimizer_state": self.opt.state_dict(),
                "scheduler_state": self.sched.state_dict(), "scaler_state": self.amp.state_dict(),
                "torch_rng_state": torch.get_rng_state()}


def checkpoint_record(state: LoopState, spec: TrainSpec, store: PatchStore, fingerprint, val_range: float,
                      run: Optimization) -> dict[str, Any]:
    """Everything ``checkpoint.pt`` holds (tensors and plain Python values only)."""
    import torch

    return {
        "format": CHECKPOINT_FORMAT,
        "model_state": state.best_state,  # best weights: what evaluate/export/infer use
        "model_config": dict(spec.model),
        "channels": list(store.channels),
        "normalization": store.normalization,
        "epoch": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_psnr_log": state.best_val_psnr_log,
        "val_data_range_log": val_range,
        "finished": state.finished,
        "stop_reason": state.stop_reason,
        "history": state.history,
        "fingerprint": fingerprint,
        "torch_version": str(torch.__version__),
        "resume": {**run.resume_state(), "bad_epochs": state.bad_epochs},  # after the last completed epoch
    }


@dataclass(frozen=True)
class RunFiles:
    """The files of one model directory: finished checkpoint, per-epoch resume state, history."""

    checkpoint: Path
    resume: Path
    history: Path

    @classmethod
    def in_dir(cls, out_dir: Path) -> "RunFiles":
        return cls(out_dir / CHECKPOINT_NAME, out_dir / RESUME_NAME, out_dir / HISTORY_NAME)

    def save(self, state: LoopState, record: Mapping[str, Any]) -> None:
        """Write the checkpoint (``resume.pt`` until training is finished) and the history."""
        save_checkpoint(self.checkpoint if state.finished else self.resume, record)
        write_text_atomic(self.history, _history_csv(state.history))
        if state.finished and self.resume.exists():
            self.resume.unlink()

    def write_history(self, state: LoopState) -> None:
        """Rewrite ``history.csv`` of a finished run if it is missing or differs."""
        text = _history_csv(state.history)
        if not self.history.is_file() or self.history.read_text() != text:
            write_text_atomic(self.history, text)


def resume_from(files: RunFiles, fingerprint: Mapping[str, Any], run: Optimization) -> LoopState | None:
    """The loop state of a compatible checkpoint or resume file (restoring ``run`` from it), else None."""
    found = next((p for p in (files.checkpoint, files.resume) if p.exists()), None)
    if found is None:
        return None
    ck = read_checkpoint(found)
    if canonical_json(ck.get("fingerprint")) != canonical_json(fingerprint):
        log.warning("%s: made with another config or other patches; training from scratch", found)
        return None
    run.restore(ck)
    state = LoopState.from_checkpoint(ck)
    log.info("%s: resuming after epoch %d", found, state.epoch)
    return state


#: A normalized input value beyond this (in training-split standard deviations) marks a channel as suspect
#: when training diverges.
EXTREME_NORMALIZED = 1e3


def extreme_channels(store: PatchStore, idx: np.ndarray, limit: float = EXTREME_NORMALIZED,
                     n: int = 64) -> list[str]:
    """Channels whose normalized values on (up to ``n``) patches ``idx`` reach ``limit`` or are not finite."""
    x, _ = store.read(idx[:n])
    mean = np.asarray(store.normalization["mean"], np.float64)[None, :, None, None]
    std = np.asarray(store.normalization["std"], np.float64)[None, :, None, None]
    with np.errstate(all="ignore"):
        z = np.abs((x.astype(np.float64) - mean) / std)
    bad = [name for c, name in enumerate(store.channels)
           if np.any(np.isinf(z[:, c])) or np.nanmax(z[:, c], initial=0.0) >= limit]
    return bad


def divergence_message(store: PatchStore, train_idx: np.ndarray, epoch: int, loss: float, score: float) -> str:
    """Why training stopped: the epoch, the non-finite numbers and the channels that look responsible."""
    suspects = extreme_channels(store, train_idx)
    return (f"{store.path}: training diverged at epoch {epoch} (train loss {loss}, validation PSNR(log) "
            f"{score}); the last finished epoch is kept for resuming. Channels with extreme normalized values "
            f"(>= {EXTREME_NORMALIZED:g} training standard deviations): {', '.join(suspects) or 'none'}")


def train_model(cfg: Mapping[str, Any], train_zarr, out_dir, *, stop_after: int | None = None,
                progress: bool | None = None, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> Path:
    """Train (or resume training) the configured model; return the path of ``checkpoint.pt``.

    Parameters
    ----------
    cfg : mapping
        Validated config (``run.seed``, ``model``, ``train``).
    train_zarr : path-like
        ``results/tiles/train.zarr``.
    out_dir : path-like
        ``results/models/{model}``; receives ``checkpoint.pt`` and ``history.csv``.
    stop_after : int, optional
        Stop (as if interrupted) once this many epochs are complete in total,
        leaving a resumable checkpoint. For time-limited jobs and tests.
    progress : bool, optional
        Show a tqdm progress bar (default: only on a terminal).
    memory_limit : int
        Passed to :class:`PatchStore`.

    Returns
    -------
    pathlib.Path
        ``out_dir / "checkpoint.pt"``; its ``finished`` entry says whether training is complete.
    """
    import torch

    configure_torch()
    spec = TrainSpec.from_config(cfg)
    store = PatchStore(train_zarr, memory_limit=memory_limit)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = RunFiles.in_dir(out_dir)

    train_idx = store.with_target(store.indices("train"))
    if train_idx.size == 0:
        raise ValueError(f"{store.path}: no training patch (split 0) has a finite target pixel")
    val = ValidationSet.of(store)
    fingerprint = {"spec": spec.as_dict(), "data": store.fingerprint(),
                   "train_patches": int(train_idx.size), "val_patches": int(val.idx.size)}

    device = resolve_device(spec.device)
    with _deterministic_torch(warn_only=device == "cuda"):
        run = Optimization.build(spec, store, device)
        if device == "cuda":
            log.info("training on %s (mixed precision: %s)", torch.cuda.get_device_name(0),
                     str(run.amp.dtype).removeprefix("torch.") if run.amp.enabled else "off")
        state = resume_from(files, fingerprint, run) or LoopState(best_state=_clone_state(run.model))
        if state.finished:
            files.write_history(state)
            return files.checkpoint
        if not _run_epochs(state, run, spec, store, train_idx, val, files, fingerprint, stop_after, progress):
            return files.resume
        log.info("training finished (%s) after %d epochs; best epoch %d, val %s %.4g", state.stop_reason,
                 state.epoch, state.best_epoch, "selection score (minus the loss)"
                 if getattr(run.model.net, "selects_by_loss", False) else "PSNR(log) [dB]", state.best_val_psnr_log)
    return files.checkpoint


def _run_epochs(state: LoopState, run: Optimization, spec: TrainSpec, store: PatchStore, train_idx: np.ndarray,
                val: ValidationSet, files: RunFiles, fingerprint, stop_after: int | None,
                progress: bool | None) -> bool:
    """Train epoch after epoch, saving after each, until finished (True) or ``stop_after`` (False)."""
    from tqdm.auto import tqdm

    def save() -> None:
        files.save(state, checkpoint_record(state, spec, store, fingerprint, val.data_range, run))

    bar = tqdm(total=spec.epochs, initial=state.epoch, desc=f"train {spec.model.get('name')}",
               unit="epoch", disable=(None if progress is None else not progress), dynamic_ncols=True)
    try:
        while not state.finished:
            if stop_after is not None and state.epoch >= stop_after:
                state.stop_reason = "interrupted"
                save()
                return False
            e = state.epoch
            t0 = time.perf_counter()
            lr = run.opt.param_groups[0]["lr"]
            train_loss = train_one_epoch(run.model, run.opt, store, train_idx, spec, e, run.amp)
            run.sched.step()
            score = val.score(run.model, store, 2 * spec.batch_size)
            if not math.isfinite(train_loss) or (val.idx.size and not math.isfinite(score)):
                raise ValueError(divergence_message(store, train_idx, e + 1, train_loss, score))
            selection = val.selection_score(run.model, store, 2 * spec.batch_size, score)
            state.end_epoch(selection, bool(val.idx.size), {"epoch": e + 1, "train_loss": train_loss,
                                                        "val_psnr_log": score, "lr": lr,
                                                        "seconds": time.perf_counter() - t0}, spec, run.model)
            save()
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", val_psnr_log=f"{score:.2f}")
            log.info("epoch %d/%d: train %s %.4f, val PSNR(log) %.2f dB%s, lr %.3g, %.1f s", e + 1, spec.epochs,
                     "loss" if hasattr(run.model.net, "training_loss") else "L1(z)", train_loss, score,
                     "" if selection == score else f", val selection score {selection:.4f}", lr,
                     state.history[-1]["seconds"])
    finally:
        bar.close()
    return True
