"""Model registry: ``build_model(cfg["model"], in_channels)``.

Every model maps normalized input channels ``(B, C, H, W)`` to the log-radiance
scale z ``(B, 1, H, W)`` (:mod:`pandafine.scaling`); :class:`~pandafine.models.wrapper.PandaFineNet`
turns it into the deployable raw-channels-to-radiance module.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

#: Model names accepted in ``model.name``, with the config keys each one requires.
MODEL_KEYS: dict[str, tuple[str, ...]] = {"unet": ("width", "depth"), "mmntlsr": ("width", "depth"),
                                           "diffusion": ("width", "depth"), "flow": ("width", "depth")}
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
}


def resolve_model_config(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``model_cfg`` with the model's optional keys filled in (what checkpoints store)."""
    name = model_cfg.get("name")
    return {**MODEL_DEFAULTS.get(name, {}), **dict(model_cfg)}


def _build_unet(model_cfg: Mapping[str, Any], in_channels: int):
    from pandafine.models.unet import UNet

    cfg = resolve_model_config(model_cfg)
    return UNet(in_channels, width=int(cfg["width"]), depth=int(cfg["depth"]), norm=str(cfg["norm"]))


def _build_mmntlsr(model_cfg: Mapping[str, Any], in_channels: int):
    from pandafine.models.mmntlsr import build_mmntlsr

    return build_mmntlsr(resolve_model_config(model_cfg), in_channels)


def _build_generative(model_cfg: Mapping[str, Any], in_channels: int):
    """diffusion / flow, with the frozen base model of ``model.base_model`` (a trained model dir) if given."""
    from pandafine.models.conditional_unet import load_base_net
    from pandafine.models.diffusion import build_diffusion
    from pandafine.models.flow import build_flow

    cfg = resolve_model_config(model_cfg)
    base = load_base_net(cfg["base_model"], in_channels) if cfg.get("base_model") else None
    return (build_diffusion if cfg["name"] == "diffusion" else build_flow)(cfg, in_channels, base=base)


_BUILDERS: dict[str, Callable[[Mapping[str, Any], int], Any]] = {"unet": _build_unet, "mmntlsr": _build_mmntlsr,
                                                                  "diffusion": _build_generative,
                                                                  "flow": _build_generative}


def build_model(model_cfg: Mapping[str, Any], in_channels: int):
    """Build the network named by ``model_cfg["name"]``.

    Parameters
    ----------
    model_cfg : mapping
        The ``model`` section of the config (``name`` plus that model's keys).
    in_channels : int
        Number of input channels.

    Returns
    -------
    torch.nn.Module
        Untrained network mapping ``(B, in_channels, H, W)`` to z ``(B, 1, H, W)``.
    """
    name = model_cfg.get("name")
    if name not in _BUILDERS:
        raise ValueError(f"key 'model.name': unknown model {name!r} (available: {', '.join(sorted(_BUILDERS))})")
    missing = [k for k in MODEL_KEYS[name] if k not in model_cfg]
    if missing:
        raise ValueError(f"key 'model': model {name!r} needs keys {', '.join(missing)}")
    return _BUILDERS[name](model_cfg, in_channels)


def input_multiple(model_cfg: Mapping[str, Any]) -> int:
    """Input height and width of the model must be multiples of this (1 if unconstrained)."""
    if model_cfg.get("name") in ("unet", "diffusion", "flow"):
        return 2 ** int(model_cfg["depth"])
    if model_cfg.get("name") == "mmntlsr":  # PANDA is encoded at 1/8 resolution
        return max(8, 2 ** int(model_cfg["depth"]))
    return 1


__all__ = ["build_model", "input_multiple", "resolve_model_config", "MODEL_KEYS", "MODEL_DEFAULTS"]
