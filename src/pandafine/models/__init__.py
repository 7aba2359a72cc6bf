"""The models' light specs: names, config keys and defaults, input size multiple, model file names.

Building a network is :func:`pandafine.models.registry.build_model` (loads torch).

Every model maps normalized input channels ``(B, C, H, W)`` to the log-radiance
scale z ``(B, 1, H, W)`` (:mod:`pandafine.core.scaling`); :class:`~pandafine.models.wrapper.PandaFineNet`
turns it into the deployable raw-channels-to-radiance module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

#: Model names accepted in ``model.name``, with the config keys each one requires.
MODEL_KEYS: dict[str, tuple[str, ...]] = {"unet": ("width", "depth"), "mmntlsr": ("width", "depth"),
                                           "diffusion": ("width", "depth"), "flow": ("width", "depth"),
                                           "hetero": ("width", "depth", "base_model")}
#: Optional keys of each model and their defaults (not in the config schema yet).
#: ``mmntlsr.modules`` mirrors :data:`pandafine.models.mmntlsr.DEFAULT_MODULES` (kept literal: no torch import here).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "unet": {"norm": "none"},
    "mmntlsr": {"modules": {"fusion": True, "affine": True, "deformable": True, "deformation_field": True,
                            "auxiliary": True, "multiscale": True, "modulation": True,
                            "local_pattern": True}},
    # generative models (pandafine.models.diffusion / flow); ``base_model`` (a trained model dir) is optional
    "diffusion": {"prediction": "v", "schedule": "cosine", "timesteps": 1000, "data_scale": 1.0, "sample_seed": 0,
                  "sampler": {"kind": "ddim", "steps": 10, "eta": 0.0}},
    "flow": {"data_scale": 1.0, "sample_seed": 0, "sampler": {"kind": "euler", "steps": 10}},
    # heteroscedastic head on a frozen base (pandafine.models.hetero); ``base_model`` is required
    "hetero": {"log_var_init": -5.0, "mean_correction": True},
}


def resolve_model_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model_cfg`` with the model's optional keys filled in (what checkpoints store)."""
    name = model_cfg.get("name")
    return {**MODEL_DEFAULTS.get(name, {}), **dict(model_cfg)}


def input_multiple(model_cfg: Mapping[str, Any]) -> int:
    """Input height and width of the model must be multiples of this (1 if unconstrained)."""
    if model_cfg.get("name") in ("unet", "diffusion", "flow", "hetero"):
        return 2 ** int(model_cfg["depth"])
    if model_cfg.get("name") == "mmntlsr":  # PANDA is encoded at 1/8 resolution
        return max(8, 2 ** int(model_cfg["depth"]))
    return 1


#: Precisions of ``infer.precision``; fp32 is the exported model itself.
PRECISIONS = ("fp32", "fp16", "int8")


def model_filename(precision: str) -> str:
    """File name of a precision's model: ``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx``."""
    check_precision(precision)
    return "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"


def precision_path(fp32_path, precision: str) -> Path:
    """Path of a precision's model beside the fp32 model ``fp32_path`` (``x.onnx`` -> ``x.int8.onnx``)."""
    check_precision(precision)
    p = Path(fp32_path)
    return p if precision == "fp32" else p.with_name(f"{p.stem}.{precision}{p.suffix}")


def check_precision(precision: str) -> None:
    """Raise ``ValueError`` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: value {precision!r} is not one of {', '.join(PRECISIONS)}")


__all__ = ["input_multiple", "resolve_model_config", "model_filename", "precision_path", "MODEL_KEYS",
           "MODEL_DEFAULTS", "PRECISIONS", "check_precision"]
