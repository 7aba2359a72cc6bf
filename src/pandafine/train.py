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
import hashlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from pandafine.atomic import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

#: Split codes of ``train.zarr``'s ``split`` array.
SPLITS = {"train": 0, "val": 1, "test": 2}
CHECKPOINT_NAME = "checkpoint.pt"
#: Per-epoch resume state of an unfinished run. Not a workflow output, so it survives Snakemake
#: deleting the outputs of a failed or killed train job; removed once training finishes.
RESUME_NAME = "resume.pt"
HISTORY_NAME = "history.csv"
HISTORY_COLUMNS = ("epoch", "train_loss", "val_psnr_log", "lr", "seconds")
CHECKPOINT_FORMAT = 1
#: Final learning rate of the cosine schedule, as a fraction of ``train.learning_rate``.
LR_FLOOR = 0.01
#: Patch stores up to this size are read into memory once; larger ones batch by batch.
DEFAULT_MEMORY_LIMIT = 2 * 1024**3
#: Channels moved by ``train.shift_augment`` (PANDA and its saturation flag).
SHIFTED_CHANNELS = ("panda", "panda_saturated")
#: Values of ``train.device``.
DEVICES = ("auto", "cpu", "cuda")


# --------------------------------------------------------------------------- patches (I/O)

class PatchStore:
    """Read access to ``train.zarr`` (contract: docs/contracts.md, section tile).

    Parameters
    ----------
    path : path-like
        The ``train.zarr`` group.
    memory_limit : int
        Stores whose ``inputs`` + ``target`` take at most this many bytes are read
        into memory once; larger ones are read batch by batch.
    """

    def __init__(self, path, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        import zarr

        self.path = Path(path)
        try:
            group = zarr.open_group(str(self.path), mode="r")
        except Exception as exc:  # zarr raises several types for a missing/invalid store
            raise FileNotFoundError(f"{self.path}: cannot open the training patches as a Zarr group: {exc}") from exc
        missing = [k for k in ("inputs", "target", "split") if k not in group]
        if missing:
            raise ValueError(f"{self.path}: missing array(s) {', '.join(missing)}; expected inputs (N, C, P, P), "
                             "target (N, 1, P, P), split (N,)")
        self._inputs, self._target = group["inputs"], group["target"]
        n, c, p, q = self._inputs.shape if self._inputs.ndim == 4 else (None,) * 4
        if n is None or p != q:
            raise ValueError(f"{self.path}: array 'inputs' has shape {self._inputs.shape}; expected (N, C, P, P)")
        if tuple(self._target.shape) != (n, 1, p, p):
            raise ValueError(f"{self.path}: array 'target' has shape {self._target.shape}; expected {(n, 1, p, p)}")
        self.split = np.asarray(group["split"][:]).astype(np.int8)
        if self.split.shape != (n,):
            raise ValueError(f"{self.path}: array 'split' has shape {self.split.shape}; expected ({n},)")
        bad = sorted(set(np.unique(self.split).tolist()) - set(SPLITS.values()))
        if bad:
            raise ValueError(f"{self.path}: array 'split' holds codes {bad}; expected 0 (train), 1 (val), 2 (test)")
        attrs = dict(group.attrs)
        self.channels = [str(ch) for ch in attrs.get("channels", [])]
        if len(self.channels) != c:
            raise ValueError(f"{self.path}: attribute 'channels' lists {len(self.channels)} names "
                             f"but 'inputs' has {c} channels")
        norm = attrs.get("normalization")
        if not isinstance(norm, Mapping) or len(norm.get("mean", [])) != c or len(norm.get("std", [])) != c:
            raise ValueError(f"{self.path}: attribute 'normalization' must be {{'mean': [{c} values], "
                             f"'std': [{c} values]}}, got {norm!r}")
        self.normalization = {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]}
        self.patch = int(p)
        self.n_channels = int(c)
        self.attrs = attrs
        self.extra = {k: np.asarray(group[k][:]) for k in ("year", "row", "col") if k in group}
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        if (self._inputs.nbytes + self._target.nbytes) <= memory_limit:
            self._cache = (np.asarray(self._inputs[:], dtype=np.float32),
                           np.asarray(self._target[:], dtype=np.float32))

    def __len__(self) -> int:
        return int(self.split.shape[0])

    def indices(self, split: str) -> np.ndarray:
        """Sorted patch indices of one split (``train``, ``val`` or ``test``)."""
        return np.flatnonzero(self.split == SPLITS[split])

    def _read(self, which: int, idx: np.ndarray) -> np.ndarray:
        if self._cache is not None:
            return self._cache[which][idx]
        arr = self._inputs if which == 0 else self._target
        uniq, inverse = np.unique(idx, return_inverse=True)  # zarr reads sorted, unique indices
        return np.asarray(arr.oindex[uniq], dtype=np.float32)[inverse]

    def read(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs (k, C, P, P), target (k, 1, P, P))`` float32 for the patch indices ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        return self._read(0, idx), self._read(1, idx)

    def iter_batches(self, idx, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(indices, inputs, target)`` for consecutive batches of ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            sel = idx[start:start + batch_size]
            x, t = self.read(sel)
            yield sel, x, t

    def read_target(self, idx) -> np.ndarray:
        """Target radiance ``(k, 1, P, P)`` of the patch indices ``idx``."""
        return self._read(1, np.asarray(idx, dtype=np.int64))

    def with_target(self, idx) -> np.ndarray:
        """The subset of ``idx`` whose patches have at least one finite target pixel."""
        idx = np.asarray(idx, dtype=np.int64)
        keep = np.zeros(idx.size, dtype=bool)
        for start in range(0, idx.size, 256):
            t = self.read_target(idx[start:start + 256])
            keep[start:start + 256] = np.isfinite(t).reshape(len(t), -1).any(axis=1)
        return idx[keep]

    def fingerprint(self) -> dict[str, Any]:
        """What identifies these patches for resuming: shapes, channels, normalization, split and offsets."""
        h = hashlib.sha256(self.split.tobytes())
        for k in ("year", "row", "col"):
            if k in self.extra:
                h.update(np.ascontiguousarray(self.extra[k]).tobytes())
        return {"n": len(self), "n_channels": self.n_channels, "patch": self.patch, "channels": self.channels,
                "normalization": self.normalization, "split_sha256": h.hexdigest()}


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

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "TrainSpec":
        from pandafine.models import resolve_model_config

        tr = cfg["train"]
        return cls(seed=int(cfg["run"]["seed"]), model=resolve_model_config(cfg["model"]), epochs=int(tr["epochs"]),
                   batch_size=int(tr["batch_size"]), learning_rate=float(tr["learning_rate"]),
                   patience=int(tr["patience"]), shift_augment=int(tr.get("shift_augment", 0)),
                   warmup_epochs=int(tr.get("warmup_epochs", 0)), device=str(tr.get("device", "auto")),
                   amp=bool(tr.get("amp", True)))

    def as_dict(self) -> dict[str, Any]:
        """What identifies a training run (for resuming); the device is not part of it."""
        out = {"seed": self.seed, "model": dict(self.model), "epochs": self.epochs, "batch_size": self.batch_size,
               "learning_rate": self.learning_rate, "patience": self.patience}
        # only when set, so that runs made before these options existed keep their identity
        if self.shift_augment:
            out["shift_augment"] = self.shift_augment
        if self.warmup_epochs:
            out["warmup_epochs"] = self.warmup_epochs
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
    """PSNR on the log scale over finite ``z_true`` pixels (see :func:`pandafine.metrics.psnr`)."""
    from pandafine.metrics import psnr

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


def build_wrapper(model_cfg: Mapping[str, Any], channels, normalization: Mapping[str, Any]):
    """An untrained :class:`~pandafine.models.wrapper.PandaFineNet` for ``model_cfg`` and the channels' statistics."""
    from pandafine.models import build_model
    from pandafine.models.wrapper import PandaFineNet

    net = build_model(model_cfg, len(channels))
    return PandaFineNet(net, normalization["mean"], normalization["std"])


def masked_l1(z_pred, target):
    """Mean ``|z_pred - z(target)|`` over pixels with a finite target radiance (0 if there are none)."""
    import torch

    from pandafine.scaling import radiance_to_log

    valid = torch.isfinite(target)
    z_true = radiance_to_log(torch.where(valid, target, torch.zeros_like(target)))
    err = torch.where(valid, (z_pred - z_true).abs(), torch.zeros_like(z_pred))
    return err.sum() / valid.sum().clamp(min=1)


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
    from pandafine.scaling import radiance_to_log

    t = store.read_target(idx)[:, 0]
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(t), radiance_to_log(np.nan_to_num(t)), np.nan).astype(np.float32)


# --------------------------------------------------------------------------- checkpoints (I/O)

def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def read_checkpoint(path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train_model` (tensors and plain Python values only)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (run the train stage first)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable pandafine checkpoint ({exc}); delete it to retrain") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {ck.get('format') if isinstance(ck, dict) else None!r} "
                         f"is not {CHECKPOINT_FORMAT}; delete it to retrain")
    return ck


def load_trained_model(model_dir, *, checkpoint: Mapping[str, Any] | None = None):
    """The best weights of ``model_dir/checkpoint.pt`` as an eval-mode PandaFineNet.

    Returns
    -------
    model : PandaFineNet
    checkpoint : dict
        The checkpoint (model config, channels, normalization, epochs, ...).
    """
    path = Path(model_dir) / CHECKPOINT_NAME
    ck = dict(checkpoint) if checkpoint is not None else read_checkpoint(path)
    model = build_wrapper(ck["model_config"], ck["channels"], ck["normalization"])
    try:
        model.load_state_dict(ck["model_state"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit model config {ck['model_config']} "
                         f"(made by another version of the model code?); retrain. {exc}") from exc
    model.eval()
    return model, ck


def _history_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for r in rows:
        w.writerow([r["epoch"], f"{r['train_loss']:.6g}", f"{r['val_psnr_log']:.6g}", f"{r['lr']:.6g}",
                    f"{r['seconds']:.3f}"])
    return buf.getvalue()


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _clone_state(module) -> dict:
    """A CPU copy of ``module``'s state (checkpoints load on any machine)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- training

def batch_loss(model, xt, tt, spec: TrainSpec):
    """Training loss of one batch: raw inputs ``xt`` (B, C, P, P), target radiance ``tt`` (B, 1, P, P).

    A network with a method ``training_loss(normalized inputs, target radiance)``
    (the generative models: diffusion, flow) supplies its own objective; otherwise
    L1 on z, plus the extra terms of a model that returns ``(z, aux)`` in training mode.
    """
    own_loss = getattr(model.net, "training_loss", None)
    if own_loss is not None:
        return own_loss(model.normalize(xt), tt)
    out = model.log_radiance(xt)
    if isinstance(out, tuple):  # (z, aux): a model with auxiliary training outputs (mmntlsr)
        from .models.mmntlsr import weighted_extra_loss

        z, aux = out
        return masked_l1(z, tt) + weighted_extra_loss(aux, tt, xt, spec.model.get("loss_weights"))
    return masked_l1(out, tt)


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


def _fresh_state(model) -> dict[str, Any]:
    return {"epoch": 0, "best_val_psnr_log": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
            "finished": False, "stop_reason": None, "best_state": _clone_state(model)}


def _restore(ck: Mapping[str, Any], model, opt, sched, amp: MixedPrecision) -> dict[str, Any]:
    """Load a checkpoint's resume state into model/optimizer/scheduler/scaler/RNG; return the loop state."""
    import torch

    res = ck["resume"]
    model.load_state_dict(res["model_state"])
    opt.load_state_dict(res["optimizer_state"])
    sched.load_state_dict(res["scheduler_state"])
    amp.load_state_dict(res.get("scaler_state") or {})
    torch.set_rng_state(res["torch_rng_state"])
    return {"epoch": int(ck["epoch"]), "best_val_psnr_log": float(ck["best_val_psnr_log"]),
            "best_epoch": int(ck["best_epoch"]), "bad_epochs": int(res["bad_epochs"]),
            "history": list(ck["history"]), "finished": bool(ck["finished"]), "stop_reason": ck["stop_reason"],
            "best_state": ck["model_state"]}


def _checkpoint(state: Mapping[str, Any], spec: TrainSpec, store: PatchStore, fingerprint, val_range: float,
                model, opt, sched, amp: MixedPrecision) -> dict[str, Any]:
    """Everything ``checkpoint.pt`` holds (tensors and plain Python values only)."""
    import torch

    return {
        "format": CHECKPOINT_FORMAT,
        "model_state": state["best_state"],  # best weights: what evaluate/export/infer use
        "model_config": dict(spec.model),
        "channels": list(store.channels),
        "normalization": store.normalization,
        "epoch": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_psnr_log": state["best_val_psnr_log"],
        "val_data_range_log": val_range,
        "finished": state["finished"],
        "stop_reason": state["stop_reason"],
        "history": state["history"],
        "fingerprint": fingerprint,
        "torch_version": str(torch.__version__),
        "resume": {  # state after the last completed epoch
            "model_state": _clone_state(model),
            "optimizer_state": opt.state_dict(),
            "scheduler_state": sched.state_dict(),
            "scaler_state": amp.state_dict(),
            "torch_rng_state": torch.get_rng_state(),
            "bad_epochs": state["bad_epochs"],
        },
    }


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
    from tqdm.auto import tqdm

    from pandafine.runtime import configure_torch

    configure_torch()
    spec = TrainSpec.from_config(cfg)
    store = PatchStore(train_zarr, memory_limit=memory_limit)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ck_path, hist_path = out_dir / CHECKPOINT_NAME, out_dir / HISTORY_NAME
    resume_path = out_dir / RESUME_NAME

    train_idx = store.with_target(store.indices("train"))
    val_idx = store.with_target(store.indices("val"))
    if train_idx.size == 0:
        raise ValueError(f"{store.path}: no training patch (split 0) has a finite target pixel")
    if val_idx.size == 0:
        log.warning("%s: no validation patch with a target; no early stopping, the last epoch is kept", store.path)
    fingerprint = {"spec": spec.as_dict(), "data": store.fingerprint(),
                   "train_patches": int(train_idx.size), "val_patches": int(val_idx.size)}
    z_val = true_log(store, val_idx)
    val_range = float(np.nanmax(z_val) - np.nanmin(z_val)) if val_idx.size else float("nan")
    if val_idx.size and not val_range > 0:
        log.warning("%s: validation target is constant; PSNR uses data range 1", store.path)
        val_range = 1.0

    device = resolve_device(spec.device)
    amp = MixedPrecision(enabled=spec.amp and device == "cuda", device=device)
    if device == "cuda":
        log.info("training on %s (mixed precision: %s)", torch.cuda.get_device_name(0),
                 str(amp.dtype).removeprefix("torch.") if amp.enabled else "off")
    with _deterministic_torch(warn_only=device == "cuda"):
        torch.manual_seed(spec.seed)
        model = build_wrapper(spec.model, store.channels, store.normalization)
        model = model.to(device=device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: cosine_lr(1.0, e, spec.epochs, warmup=spec.warmup_epochs))
        state = _fresh_state(model)
        found = next((p for p in (ck_path, resume_path) if p.exists()), None)
        if found is not None:
            ck = read_checkpoint(found)
            if _canonical(ck.get("fingerprint")) == _canonical(fingerprint):
                state = _restore(ck, model, opt, sched, amp)
                log.info("%s: resuming after epoch %d", found, state["epoch"])
            else:
                log.warning("%s: made with another config or other patches; training from scratch", found)

        def save() -> None:
            path = ck_path if state["finished"] else resume_path
            save_checkpoint(path, _checkpoint(state, spec, store, fingerprint, val_range, model, opt, sched, amp))
            write_text_atomic(hist_path, _history_csv(state["history"]))
            if state["finished"] and resume_path.exists():
                resume_path.unlink()

        if state["finished"]:
            text = _history_csv(state["history"])
            if not hist_path.is_file() or hist_path.read_text() != text:
                write_text_atomic(hist_path, text)
            return ck_path

        bar = tqdm(total=spec.epochs, initial=state["epoch"], desc=f"train {spec.model.get('name')}",
                   unit="epoch", disable=(None if progress is None else not progress), dynamic_ncols=True)
        try:
            while not state["finished"]:
                if stop_after is not None and state["epoch"] >= stop_after:
                    state["stop_reason"] = "interrupted"
                    save()
                    return resume_path
                e = state["epoch"]
                t0 = time.perf_counter()
                lr = opt.param_groups[0]["lr"]
                train_loss = train_one_epoch(model, opt, store, train_idx, spec, e, amp)
                sched.step()
                if val_idx.size:
                    score = psnr_log(predict_log(model, store, val_idx, 2 * spec.batch_size), z_val, val_range)
                else:
                    score = float("nan")
                state["epoch"] = e + 1
                if not val_idx.size or score > state["best_val_psnr_log"]:
                    state.update(best_val_psnr_log=score if val_idx.size else -math.inf, best_epoch=e + 1,
                                 bad_epochs=0, best_state=_clone_state(model))
                else:
                    state["bad_epochs"] += 1
                state["history"].append({"epoch": e + 1, "train_loss": train_loss, "val_psnr_log": score,
                                         "lr": lr, "seconds": time.perf_counter() - t0})
                if state["bad_epochs"] >= spec.patience:
                    state.update(finished=True, stop_reason="early_stopping")
                elif state["epoch"] >= spec.epochs:
                    state.update(finished=True, stop_reason="epochs")
                save()
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}", val_psnr_log=f"{score:.2f}")
                log.info("epoch %d/%d: train L1(z) %.4f, val PSNR(log) %.2f dB, lr %.3g, %.1f s", e + 1,
                         spec.epochs, train_loss, score, lr, state["history"][-1]["seconds"])
        finally:
            bar.close()
        log.info("training finished (%s) after %d epochs; best epoch %d, val PSNR(log) %.2f dB",
                 state["stop_reason"], state["epoch"], state["best_epoch"], state["best_val_psnr_log"])
    return ck_path
