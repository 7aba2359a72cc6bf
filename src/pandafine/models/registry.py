"""Build models by name, and rebuild trained ones from their checkpoints.

:func:`build_model` maps ``cfg["model"]`` to an untrained network;
:func:`load_trained_model` gives the deployable
:class:`~pandafine.models.wrapper.PandaFineNet` of a trained model directory;
:func:`load_base_net` the frozen base network of a residual generative model.
The light model specs (names, defaults) are in :mod:`pandafine.models`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from pandafine.models import MODEL_KEYS, resolve_model_config
from pandafine.models.checkpoint import CHECKPOINT_NAME, read_checkpoint
from pandafine.models.diffusion import build_diffusion
from pandafine.models.flow import build_flow
from pandafine.models.hetero import build_hetero
from pandafine.models.mmntlsr import build_mmntlsr
from pandafine.models.unet import UNet
from pandafine.models.wrapper import PandaFineNet


def build_wrapper(model_cfg: Mapping[str, Any], channels, normalization: Mapping[str, Any]):
    """An untrained :class:`~pandafine.models.wrapper.PandaFineNet` for ``model_cfg`` and the channels' statistics."""
    net = build_model(model_cfg, len(channels))
    return PandaFineNet(net, normalization["mean"], normalization["std"])


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


def _build_unet(model_cfg: Mapping[str, Any], in_channels: int):
    cfg = resolve_model_config(model_cfg)
    return UNet(in_channels, width=int(cfg["width"]), depth=int(cfg["depth"]), norm=str(cfg["norm"]))


def _build_mmntlsr(model_cfg: Mapping[str, Any], in_channels: int):
    return build_mmntlsr(resolve_model_config(model_cfg), in_channels)


def _build_generative(model_cfg: Mapping[str, Any], in_channels: int):
    """diffusion / flow, with the frozen base model of ``model.base_model`` (a trained model dir) if given."""
    cfg = resolve_model_config(model_cfg)
    base = load_base_net(cfg["base_model"], in_channels) if cfg.get("base_model") else None
    return (build_diffusion if cfg["name"] == "diffusion" else build_flow)(cfg, in_channels, base=base)


def _build_hetero(model_cfg: Mapping[str, Any], in_channels: int):
    """The heteroscedastic head on the frozen base model of ``model.base_model`` (required)."""
    cfg = resolve_model_config(model_cfg)
    if not cfg.get("base_model"):
        raise ValueError("key 'model.base_model': model 'hetero' needs the directory of a trained unet/mmntlsr "
                         "model")
    return build_hetero(cfg, in_channels, load_base_net(cfg["base_model"], in_channels))


_BUILDERS: dict[str, Callable[[Mapping[str, Any], int], Any]] = {"unet": _build_unet, "mmntlsr": _build_mmntlsr,
                                                                  "diffusion": _build_generative,
                                                                  "flow": _build_generative,
                                                                  "hetero": _build_hetero}


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


def load_base_net(model_dir, in_channels: int) -> nn.Module:
    """The trained, frozen network of ``model_dir/checkpoint.pt`` (a deterministic model: unet, mmntlsr).

    It must have been trained on the same patches (same channels and normalization),
    as the generative model applies it to its own normalized inputs.
    """
    path = Path(model_dir) / CHECKPOINT_NAME
    ck = read_checkpoint(path)
    if ck["model_config"].get("name") in ("diffusion", "flow", "hetero"):
        raise ValueError(f"key 'model.base_model': {path} holds a {ck['model_config']['name']} model; the base "
                         "must be a deterministic model (unet, mmntlsr)")
    if len(ck["channels"]) != in_channels:
        raise ValueError(f"key 'model.base_model': {path} takes {len(ck['channels'])} channels, the patches have "
                         f"{in_channels}")
    net = build_model(ck["model_config"], in_channels)
    prefix = "net."
    net.load_state_dict({k[len(prefix):]: v for k, v in ck["model_state"].items() if k.startswith(prefix)})
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
