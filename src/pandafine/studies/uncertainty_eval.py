"""``uncertainty.json`` of a trained model: its per-pixel uncertainty on the test split and a held-out scene.

The I/O side of :mod:`pandafine.studies.uncertainty` (whose functions are pure). Three
uncertainty models of the trained (base) model are scored against the Luojia target:

* the **constant-spread baseline** ``N(base, sigma_const**2)``: ``sigma_const`` is the RMS
  residual of the base on the validation split (:func:`~pandafine.studies.uncertainty.constant_sigma`);
* the **heteroscedastic head** (:mod:`pandafine.models.hetero`): mean and log-variance per pixel
  on the frozen base, trained by Gaussian NLL on the training split;
* the **residual generative ensemble**: a flow (or diffusion) model of ``z - z_base`` on the
  frozen base (:mod:`pandafine.models.flow`), ``members`` samples of at most 8 network calls each.

Both companions are trained here (or reused: :func:`~pandafine.studies.design_space.train_or_reuse`
keys them by their training spec, the patches and the base checkpoint's hash) into
``<out>/uncertainty_models/{hetero,generative}``. The config's ``uncertainty`` section
(:data:`DEFAULT_SPEC`) sets their size, epochs, sampler and the ensemble size.

Pixels, log space and data range are those of ``metrics.json``
(:func:`pandafine.training.evaluate.evaluate_model`): a pixel counts where the target, the base
model and the interpolated PANDA DN are finite; z = log1p(L / RADIANCE_REF), negative predicted
z taken as 0 (as evaluation's radiance round trip does); the PSNR data range is the log range of
the target over those pixels. So the base PSNR(log) of the test split equals ``metrics.json``'s
``test_split.model.psnr_log_db`` up to float summation order. The held-out scene
(``holdout_tiles``, e.g. the benchmark's second scene) is scored on all its patches with a target.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from pandafine.core import metrics as M
from pandafine.core.checksums import sha256_file
from pandafine.core.runtime import configure_torch
from pandafine.core.scaling import log_to_radiance, radiance_to_log
from pandafine.inference.ensemble import (
    EnsembleSpec,
    combine_members,
    member_noise_fns,
    sample_members,
    write_ensemble_file,
)
from pandafine.models import MODEL_DEFAULTS
from pandafine.models.checkpoint import CHECKPOINT_NAME
from pandafine.models.conditional_unet import SamplerSpec
from pandafine.models.noise import make_torch_noise_fn
from pandafine.models.registry import load_trained_model
from pandafine.preprocess.calibrate import PANDA_DN_MAX
from pandafine.studies.design_space import train_or_reuse
from pandafine.studies.uncertainty import (
    MEMBER_COUNTS,
    ensemble_spread,
    gaussian_spread_scale,
    panda_classes,
    spread_skill,
    uncertainty_summary,
    write_uncertainty,
)
from pandafine.studies.uncertainty_figure import uncertainty_figure
from pandafine.tiles.store import PatchStore
from pandafine.training.evaluate import (
    EVAL_BATCH_PIXELS,
    data_ranges,
    eval_batch_patches,
    patch_offsets,
    test_split_setup,
    upsample_patches,
)

log = logging.getLogger(__name__)

#: Defaults of the config's ``uncertainty`` section. ``hetero`` / ``generative``: the companion
#: models' ``model`` sections (``base_model`` is set to the evaluated model); ``null`` leaves one out.
#: ``calibrate``: scale their spreads by factors fitted on the validation split. ``recentre`` /
#: ``antithetic``: the ensemble recipe (:class:`~pandafine.inference.ensemble.EnsembleSpec`).
#: ``epochs``: their ``train.epochs`` (None: the config's). ``members``: ensemble size; ``seed``:
#: member ``m`` draws its noise from seed ``seed + m``.
DEFAULT_SPEC: dict[str, Any] = {
    "members": 16,
    "seed": 0,
    "calibrate": True,
    "recentre": True,
    "antithetic": False,
    "epochs": None,
    "hetero": {"name": "hetero", "width": 16, "depth": 2},
    "generative": {"name": "flow", "width": 16, "depth": 2, "data_scale": 0.1, "selection": "loss",
                   "sampler": {"kind": "heun", "steps": 4}},
}
#: Most network calls a member's sampler may make (the issue's budget).
MAX_CALLS_PER_MEMBER = 8
COMPANION_DIR = "uncertainty_models"


@dataclass(frozen=True)
class UncertaintySpec:
    """What the uncertainty study trains and samples (the config's ``uncertainty`` section)."""

    members: int
    seed: int
    epochs: int | None
    hetero: Mapping[str, Any] | None
    generative: Mapping[str, Any] | None
    #: Scale the companions' spreads by factors fitted on the validation split (:func:`fit_spread_scales`).
    calibrate: bool = True
    #: Members recentred on the base; antithetic pairs (:mod:`pandafine.inference.ensemble`).
    recentre: bool = True
    antithetic: bool = False

    def ensemble(self, scale: float = 1.0) -> EnsembleSpec:
        """The ensemble recipe with spread factor ``scale``."""
        return EnsembleSpec(self.members, self.seed, self.antithetic, self.recentre, float(scale))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, members: int | None = None,
                    epochs: int | None = None) -> "UncertaintySpec":
        """The spec of ``cfg["uncertainty"]`` over :data:`DEFAULT_SPEC`; ``members`` / ``epochs`` override."""
        sec = {**copy.deepcopy(DEFAULT_SPEC), **dict(cfg.get("uncertainty") or {})}
        epochs = sec["epochs"] if epochs is None else epochs
        spec = cls(members=int(members if members is not None else sec["members"]), seed=int(sec["seed"]),
                   epochs=None if epochs is None else int(epochs),
                   hetero=sec["hetero"], generative=sec["generative"], calibrate=bool(sec["calibrate"]),
                   recentre=bool(sec["recentre"]), antithetic=bool(sec["antithetic"]))
        if spec.generative is not None and spec.members < 2:
            raise ValueError(f"key 'uncertainty.members': value {spec.members} must be >= 2 (an ensemble's spread)")
        if spec.generative is not None and spec.antithetic and spec.members % 2:
            raise ValueError(f"key 'uncertainty.members': value {spec.members} must be even with "
                             "'uncertainty.antithetic' (members come in pairs)")
        if spec.hetero is not None and spec.hetero.get("name") != "hetero":
            raise ValueError(f"key 'uncertainty.hetero.name': must be 'hetero', got {spec.hetero.get('name')!r}")
        if spec.generative is not None:
            name = spec.generative.get("name")
            if name not in ("flow", "diffusion"):
                raise ValueError(f"key 'uncertainty.generative.name': must be 'flow' or 'diffusion', got {name!r}")
            calls = SamplerSpec.from_mapping({**MODEL_DEFAULTS[name]["sampler"],
                                              **dict(spec.generative.get("sampler") or {})}).network_calls
            if calls > MAX_CALLS_PER_MEMBER:
                raise ValueError(f"key 'uncertainty.generative.sampler': {calls} network calls per member, more "
                                 f"than {MAX_CALLS_PER_MEMBER}")
        return spec


def train_companions(cfg: Mapping[str, Any], train_zarr, model_dir, spec: UncertaintySpec,
                     work_dir) -> dict[str, dict[str, Any]]:
    """Train (or reuse) the heteroscedastic head and the residual generative model of ``model_dir``.

    Returns ``{"hetero": record, "generative": record}`` (those configured), each the key record of
    :func:`~pandafine.studies.design_space.train_or_reuse` plus ``dir``.
    """
    model_dir, work_dir = Path(model_dir), Path(work_dir)
    data_fp = PatchStore(train_zarr).fingerprint()
    base_key = sha256_file(model_dir / CHECKPOINT_NAME)
    out = {}
    for name, mc in (("hetero", spec.hetero), ("generative", spec.generative)):
        if mc is None:
            continue
        d = work_dir / name
        rec = train_or_reuse(cfg, Path(train_zarr), name, mc, d, data_fp, spec.epochs, model_dir, base_key,
                             study="uncertainty")
        out[name] = {**rec, "dir": str(d)}
    return out


@dataclass
class Predictors:
    """The base model and its companions (eval-mode PandaFineNets; a companion may be None)."""

    base: Any
    hetero: Any = None
    generative: Any = None
    ensemble: EnsembleSpec | None = None

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """z of the base, ``mu`` / ``sigma`` of the head, raw member samples ``members`` ``(M, k, P, P)``.

        For raw inputs ``x``. Everything is uncensored (z may be below 0): :func:`scene_summary`
        combines the members (:func:`~pandafine.inference.ensemble.combine_members`, clamped at 0)
        and censors the Gaussians at 0.
        """
        import torch

        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            out["base"] = self.base.log_radiance(xt)[:, 0].double().numpy()
            if self.hetero is not None:
                mu, log_var = self.hetero.net.predict(self.hetero.normalize(xt))
                out["mu"], out["sigma"] = mu[:, 0].double().numpy(), np.exp(0.5 * log_var[:, 0].double().numpy())
            if self.generative is not None:
                _, out["members"] = sample_members(self.generative, xt,
                                                   member_noise_fns(self.ensemble, make_torch_noise_fn))
        return out


def split_pixels(store, idx: np.ndarray, predictors: Predictors, *, factor: int, panda_ch: int,
                 batch: int) -> Iterator[dict[str, np.ndarray]]:
    """Per batch of ``idx``, the valid pixels' arrays: ``y`` (target z), ``dn`` (cell DN), and the predictions.

    Valid: the target, the base prediction and the interpolated PANDA DN are finite (``metrics.json``'s
    pixels). ``members`` is ``(M, n)``, the rest 1-D.
    """
    for start in range(0, idx.size, batch):
        sel = idx[start:start + batch]
        x, t = store.read(sel)
        rows, cols = patch_offsets(store, sel)
        dn = upsample_patches(x[:, panda_ch], factor, rows, cols)
        pred = predictors.predict(x)
        true = t[:, 0].astype(np.float64)
        ok = np.isfinite(true) & np.isfinite(pred["base"]) & np.isfinite(dn)
        cell = cell_dn(x, panda_ch)
        part = {"y": radiance_to_log(true[ok]), "dn": np.where(np.isfinite(cell), cell, dn)[ok]}
        for k, v in pred.items():
            part[k] = v[:, ok] if k == "members" else v[ok]
        yield part


def cell_dn(x: np.ndarray, panda_ch: int) -> np.ndarray:
    """The PANDA DN of each pixel's own 1 km cell: the patches' PANDA channel (k, P, P). It decides the pixel's
    PANDA class; the interpolated DN would make the pixels at a saturated cell's edge 'lit'."""
    return x[:, panda_ch].astype(np.float64)


def _gather(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts], axis=-1) for k in parts[0]} if parts else {}


def fit_spread_scales(px: Mapping[str, np.ndarray], ensemble: EnsembleSpec | None) -> dict[str, float]:
    """Spread factors of the companions fitted on one split's gathered pixels (the validation split).

    The companions learn on the training split, where the base model's residuals are smaller than on
    unseen patches, so both come out overconfident; one factor each corrects that:
    :func:`~pandafine.studies.uncertainty.gaussian_spread_scale` (the NLL-optimal factor of the
    head's sigma), and for the ensemble the factor whose combined members
    (:func:`~pandafine.inference.ensemble.combine_members`, clamped at 0) have a spread-skill ratio
    of 1 (:func:`ensemble_scale_for_unit_ratio`).
    """
    out = {}
    if "sigma" in px:
        out["gaussian_hetero"] = gaussian_spread_scale(px["mu"], px["sigma"], px["y"])
    if "members" in px:
        out["ensemble"] = ensemble_scale_for_unit_ratio(px["members"], px["base"], px["y"], ensemble)
    return out


def ensemble_scale_for_unit_ratio(members, base, y, ensemble: EnsembleSpec) -> float:
    """The spread factor (0.05 to 20) at which the combined, clamped members' spread-skill ratio on ``y`` is 1.

    Without clamping the ratio is proportional to the factor
    (:func:`~pandafine.studies.uncertainty.ensemble_spread_scale`); clamping at 0 makes it a root to find.
    Where no factor in the range reaches 1 (an untrained companion), the nearer bound is returned
    with a warning naming the ratios.
    """
    from scipy.optimize import brentq

    def gap(s: float) -> float:
        return spread_skill(combine_members(members, base, replace(ensemble, scale=s)), y) - 1.0

    lo, hi = 0.05, 20.0
    g_lo, g_hi = gap(lo), gap(hi)
    if g_lo > 0 or g_hi < 0:
        bound = lo if g_lo > 0 else hi
        log.warning("ensemble spread: no factor in [%g, %g] gives a spread-skill ratio of 1 on the validation split "
                    "(ratio %.3g at %g, %.3g at %g); using %g: the generative companion is far off (undertrained?)",
                    lo, hi, g_lo + 1, lo, g_hi + 1, hi, bound)
        return bound
    return float(brentq(gap, lo, hi, xtol=1e-4))


#: Patches drawn in ``uncertainty.png``.
FIGURE_PATCHES = 4
FIGURE_NAME = "uncertainty.png"


def figure_patches(store, idx: np.ndarray, predictors: Predictors, scales: Mapping[str, float], panda_ch: int,
                   sigma_const: float, n: int = FIGURE_PATCHES) -> dict[str, np.ndarray]:
    """The ``n`` patches of ``idx`` with the most saturated PANDA pixels (then the brightest), for the figure.

    ``mean`` is the ensemble mean (the base without an ensemble), ``spread`` the ensemble's spread
    scaled by ``scales["ensemble"]`` (the head's sigma, or ``sigma_const``, without one), ``sigma``
    the head's sigma scaled by ``scales["gaussian_hetero"]``; NaN where the target is not finite.
    """
    x = store.read(idx)[0]
    panda = x[:, panda_ch]
    key = np.nansum(panda >= PANDA_DN_MAX, axis=(1, 2)) * 1e6 + np.nan_to_num(np.nanmean(panda, axis=(1, 2)))
    pick = np.sort(idx[np.argsort(-key, kind="stable")[:n]])
    xs, t = store.read(pick)
    pred = predictors.predict(xs)
    valid = np.isfinite(t[:, 0])
    y = np.where(valid, radiance_to_log(np.nan_to_num(t[:, 0].astype(np.float64))), np.nan)
    out = {"target": y}
    if "members" in pred:
        f = combine_members(pred["members"], pred["base"], replace(predictors.ensemble,
                                                                   scale=scales.get("ensemble", 1.0)))
        out["mean"], out["spread"] = f.mean(axis=0), ensemble_spread(f)
    if "sigma" in pred:
        out["sigma"] = pred["sigma"] * scales.get("gaussian_hetero", 1.0)
    if "mean" not in out:
        out["mean"] = np.maximum(pred["base"], 0.0)
        out["spread"] = out.pop("sigma") if "sigma" in out else np.full(y.shape, float(sigma_const))
    return {k: np.where(valid, v, np.nan) for k, v in out.items()}


def scene_summary(px: Mapping[str, np.ndarray], sigma_const: float, source, scales: Mapping[str, float] | None = None,
                  ensemble: EnsembleSpec | None = None) -> dict[str, Any]:
    """:func:`~pandafine.studies.uncertainty.uncertainty_summary` of one scene's gathered pixels.

    The raw members are combined by ``ensemble`` (:func:`~pandafine.inference.ensemble.combine_members`);
    the Gaussians are censored at z = 0. With ``scales`` (:func:`fit_spread_scales`) the companions'
    spreads are scaled by them, and the unscaled overall CRPS, spread-skill ratio and coverage are
    kept under ``uncalibrated``.
    """
    if not px or px["y"].size == 0:
        raise ValueError(f"{source}: no pixel has a finite target, model prediction and PANDA DN")
    true = log_to_radiance(px["y"])
    range_log, _ = data_ranges(true, np.ones(true.shape, bool), source)

    def summary(s: Mapping[str, float]) -> dict[str, Any]:
        members, sets = px.get("members"), None
        if members is not None:
            recipe = replace(ensemble, scale=s.get("ensemble", 1.0))
            sets = {m: combine_members(members[:m], px["base"], recipe) for m in MEMBER_COUNTS
                    if 2 <= m < members.shape[0]}
            members = combine_members(members, px["base"], recipe)
        sigma = px.get("sigma")
        if sigma is not None and "gaussian_hetero" in s:
            sigma = sigma * s["gaussian_hetero"]
        return uncertainty_summary(px["y"], px["base"], data_range=range_log, sigma_const=sigma_const,
                                   members=members, sigma_hetero=sigma, mu_hetero=px.get("mu"),
                                   classes=panda_classes(px["dn"]), lower=0.0, member_sets=sets)

    out = summary(scales or {})
    if scales:
        raw = summary({})["overall"] or {}
        out["uncalibrated"] = {k: {kk: raw[k][kk] for kk in ("crps", "spread_skill", "coverage")}
                               for k in scales if k in raw}
    return out


def evaluate_uncertainty(cfg: Mapping[str, Any], train_zarr, model_dir, out_dir, *, holdout_tiles=None,
                         members: int | None = None, epochs: int | None = None,
                         batch_pixels: int = EVAL_BATCH_PIXELS) -> Path:
    """Write ``out_dir/uncertainty.json`` for the model of ``model_dir`` (module docstring).

    Parameters
    ----------
    cfg : mapping
        Validated config (``grid.factor``, ``train``, ``uncertainty``).
    train_zarr : path-like
        ``results/tiles/train.zarr`` with non-empty validation and test splits and a ``panda`` channel.
    model_dir : path-like
        Directory with ``checkpoint.pt`` of a deterministic model (unet, mmntlsr): the base.
    out_dir : path-like
        Receives ``uncertainty.json`` (usually ``model_dir``, beside ``metrics.json``) and the
        companion models under ``uncertainty_models/``.
    holdout_tiles : path-like, optional
        ``train.zarr`` of another scene (same channels): all its patches with a target are scored too.
    members, epochs : int, optional
        Override ``uncertainty.members`` / ``uncertainty.epochs``.
    batch_pixels : int
        Working pixels per batch (:func:`~pandafine.training.evaluate.eval_batch_patches`).

    Returns
    -------
    pathlib.Path
        Path of ``uncertainty.json``: ``test_split`` and (with ``holdout_tiles``) ``holdout_scene``,
        each the summary of :func:`~pandafine.studies.uncertainty.uncertainty_summary` plus
        ``n_patches``; ``sigma_const`` and ``n_val_pixels``; ``models`` (the companions' records);
        ``cost`` (network calls per member, seconds of the base and of the ensemble on the test
        split); ``source``.

    Raises
    ------
    ValueError
        Naming the store or the checkpoint: channels differ, no ``panda`` channel, an empty
        validation or test split, no valid validation pixel, a zero validation residual, or a
        sampler over :data:`MAX_CALLS_PER_MEMBER` network calls.
    """
    configure_torch()
    spec = UncertaintySpec.from_config(cfg, members=members, epochs=epochs)
    store = PatchStore(train_zarr)
    ck_path = Path(model_dir) / CHECKPOINT_NAME
    base, ck = load_trained_model(model_dir)
    if list(ck["channels"]) != store.channels:
        raise ValueError(f"{ck_path}: model channels {ck['channels']} differ from {store.path} channels "
                         f"{store.channels}")
    panda_ch, factor, test_idx = test_split_setup(cfg, store)
    val_idx = store.indices("val")
    if val_idx.size == 0:
        raise ValueError(f"{store.path}: the validation split (split == 1) is empty; the constant-spread "
                         "baseline is fitted on it")
    out_dir = Path(out_dir)
    companions = train_companions(cfg, train_zarr, model_dir, spec, out_dir / COMPANION_DIR)
    pred = Predictors(base, ensemble=spec.ensemble())
    calls = None
    if "hetero" in companions:
        pred.hetero = load_trained_model(companions["hetero"]["dir"])[0]
    if "generative" in companions:
        pred.generative = load_trained_model(companions["generative"]["dir"])[0]
        calls = pred.generative.net.sampler.network_calls
    batch = eval_batch_patches(store.patch, 2 * int(cfg["train"]["batch_size"]), batch_pixels)
    kw = dict(factor=factor, panda_ch=panda_ch, batch=batch)

    # validation, predicted once: the base's RMS residual in z -> sigma_const; the companions' spread factors
    only_base = Predictors(base)
    val_px = _gather(list(split_pixels(store, val_idx, pred if spec.calibrate else only_base, **kw)))
    n_val = int(val_px["y"].size) if val_px else 0
    sigma_const = M.rmse(np.maximum(val_px["base"], 0.0), val_px["y"]) if n_val else float("nan")
    if not (n_val > 0 and np.isfinite(sigma_const) and sigma_const > 0):
        raise ValueError(f"{store.path}: the validation split gives no positive RMS residual of the model "
                         f"({n_val} valid pixels, RMS {sigma_const}); need valid pixels where the model and the "
                         "target differ")
    scales = fit_spread_scales(val_px, pred.ensemble) if spec.calibrate else {}
    del val_px
    if "generative" in companions:  # the recipe an ensemble product of the companion follows
        write_ensemble_file(companions["generative"]["dir"], spec.ensemble(scales.get("ensemble", 1.0)),
                            fitted_on=f"{store.path} validation split" if scales else None)
    t0 = time.perf_counter()
    for _ in split_pixels(store, test_idx, only_base, **kw):
        pass
    base_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = _gather(list(split_pixels(store, test_idx, pred, **kw)))
    all_seconds = time.perf_counter() - t0
    sections: dict[str, Any] = {"test_split": {**scene_summary(test, sigma_const, store.path, scales, pred.ensemble),
                                               "n_patches": int(test_idx.size)}}
    del test
    if holdout_tiles is not None:
        other = PatchStore(holdout_tiles)
        if other.channels != store.channels:
            raise ValueError(f"{other.path}: channels {other.channels} differ from {store.path} channels "
                             f"{store.channels}")
        idx = other.with_target(np.arange(len(other)))
        px = _gather(list(split_pixels(other, idx, pred, **kw)))
        sections["holdout_scene"] = {**scene_summary(px, sigma_const, other.path, scales, pred.ensemble),
                                     "n_patches": int(idx.size)}
    sections.update({
        "sigma_const": float(sigma_const), "n_val_pixels": n_val,
        "spread_scale": {**scales, "fitted_on": "validation split"} if scales else None,
        "models": {k: {kk: v[kk] for kk in ("dir", "model_config", "train_seconds", "epochs_run", "best_epoch")}
                   for k, v in companions.items()},
        "cost": {"network_calls_per_member": calls, "members": spec.members if calls else None,
                 "base_seconds_test_split": round(base_seconds, 3),
                 "all_models_seconds_test_split": round(all_seconds, 3)},
        "source": {"tiles": str(store.path), "checkpoint": str(ck_path), "best_epoch": ck.get("best_epoch"),
                   "holdout_tiles": None if holdout_tiles is None else str(holdout_tiles),
                   "sigma_const_fit": "RMS residual of the model in z on the validation split, over the pixels "
                                      "where the target, the model and the PANDA DN are finite"},
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_store, fig_idx, fig_scene = ((other, idx, "held-out scene") if holdout_tiles is not None
                                     else (store, test_idx, "test split"))
    shown = sections["holdout_scene" if holdout_tiles is not None else "test_split"]
    uncertainty_figure(out_dir / FIGURE_NAME,
                       figure_patches(fig_store, fig_idx, pred, scales, panda_ch, sigma_const),
                       {m: b["reliability"] for m, b in (shown.get("overall") or {}).items()
                        if isinstance(b, dict) and "reliability" in b},
                       title=f"{fig_scene}: spread next to the error of the mean (z), patches with the most "
                             f"saturated PANDA pixels; {ck_path.parent.name}")
    path = write_uncertainty(out_dir, sections)
    overall = sections["test_split"].get("overall") or {}
    log.info("uncertainty: sigma_const %.4g (%d validation pixels); test CRPS constant %s, hetero %s, ensemble %s",
             sigma_const, n_val, (overall.get("gaussian_constant") or {}).get("crps"),
             (overall.get("gaussian_hetero") or {}).get("crps"), (overall.get("ensemble") or {}).get("crps"))
    return path
