"""Which config values each workflow rule depends on, as digests Snakemake can compare.

Every rule carries ``params: config=rule_config_digest(config, rule, ...)``: the sha256 of the
config values its job reads (:data:`RULE_CONFIG_KEYS`, dotted paths; a section name means all of
it). Snakemake reruns a job whose params changed, so editing the config reruns exactly the rules
whose values changed, and (through their outputs) everything downstream of them.

:func:`product_config` is the part of the config a product depends on: everything but the
sections of studies, evaluations and download policy. Its hash is the products' ``config_sha256``
tag, so a change to the ablation settings neither reruns inference nor makes ``pandafine verify``
report drift.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

from pandafine.sources.registry import source_kind

#: Sections that describe studies, evaluations and how to download, not what a product is.
NON_PRODUCT_SECTIONS = ("ablation", "design_space", "evaluate", "download")

#: What the working grid is made of: the region and the grid's keys, but not ``grid.block`` (how inference
#: cuts the grid into jobs changes no pixel before inference) nor ``region.mask`` (which blocks are planned
#: and which product pixels are nodata: :func:`lookup` leaves it out of ``region``).
GRID_KEYS = ("region", "grid.crs", "grid.pixel_size", "grid.factor", "grid.anchor")

#: Keys of ``region`` that are not part of the working grid (:data:`GRID_KEYS`): they act on products only.
REGION_PRODUCT_KEYS = ("mask",)

#: Rule -> the config values its job reads (besides its input files). ``download`` depends on the
#: layer's source kind and is given by :func:`download_keys`.
RULE_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "grid": GRID_KEYS,
    "calibrate_panda": ("preprocess.panda_out_of_range",),
    "landsat_block": GRID_KEYS + ("preprocess.landsat_block", "sources.landsat", "preprocess.landsat_coastal",
                                  "preprocess.landsat_overviews"),
    "composite_landsat": ("preprocess.landsat_gapfill_years", "preprocess.min_landsat_coverage",
                          "preprocess.landsat_block"),
    "calibrate_luojia": ("preprocess.luojia_background", "preprocess.luojia_gain_anchor"),
    "calibrate_dem": (),
    "denoise_luojia": ("preprocess.luojia_background", "preprocess.spike_factor"),
    "mosaic": (),
    "resample_panda": ("preprocess.panda_resampling", "preprocess.min_coverage", "preprocess.panda_alignment"),
    "resample_dem": ("preprocess.min_coverage",),
    "cube": ("tiles.chunk",),
    "patches": ("tiles", "run.seed"),
    "train": ("model", "train", "run.seed"),
    "evaluate": ("grid.factor", "train.batch_size"),
    "export": ("infer.tile", "infer.batch_size"),
    "quantize": (),
    "precision": ("infer.tile", "infer.batch_size"),
    "level": ("infer", "grid.block", "run.target_years"),
    "infer": ("@product",),
    "assemble": ("@product",),
    "temporal": ("grid.factor", "run.target_years"),
    "ablation": ("model", "train", "run.seed", "grid.factor", "ablation"),
    "design_space": ("@product", "design_space"),
    "uncertainty": ("model", "train", "run.seed", "grid.factor", "uncertainty"),
    "catalog": ("@product",),
    "provenance": ("@product",),
    "report_figures": (),
    "fidelity": ("grid.factor",),
    "report_fidelity": (),
    "report_ablation": (),
}


def product_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config without :data:`NON_PRODUCT_SECTIONS`: what a product depends on."""
    return {k: v for k, v in cfg.items() if k not in NON_PRODUCT_SECTIONS}


def download_keys(cfg: Mapping[str, Any], layer: str) -> tuple[str, ...]:
    """What the download of ``layer`` (or ``truth``, the synthetic scene's radiance) reads: its source,
    the region and grid, the years; the synthetic scene's settings for synthetic sources; the download
    policy for http and stac."""
    if layer == "truth":
        return GRID_KEYS + ("run", "synthetic")
    kind = source_kind(cfg, layer)
    keys = GRID_KEYS + ("run", f"sources.{layer}")
    if kind == "synthetic":
        keys += ("synthetic", "sources.panda.pattern")
    if kind in ("http", "stac"):
        keys += ("download",)
    return keys


def lookup(cfg: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key (``@product``: :func:`product_config`); None where it is absent.

    ``region`` is the region without :data:`REGION_PRODUCT_KEYS` (the products, through ``@product``,
    depend on those; the grid and everything before inference do not).
    """
    if key == "@product":
        return product_config(cfg)
    if key == "region" and isinstance(cfg.get("region"), Mapping):
        return {k: v for k, v in cfg["region"].items() if k not in REGION_PRODUCT_KEYS}
    value: Any = cfg
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def config_digest(cfg: Mapping[str, Any], keys: Sequence[str]) -> str:
    """sha256 (first 16 hex digits) of the values at ``keys``, independent of key order inside them."""
    values = {key: lookup(cfg, key) for key in keys}
    return hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def rule_config_digest(cfg: Mapping[str, Any], rule: str, layer: str | None = None) -> str:
    """The ``config`` param of ``rule`` (for ``download``, of ``layer``)."""
    if rule == "download":
        if layer is None:
            raise ValueError("rule_config_digest: the download rule needs its layer")
        return config_digest(cfg, download_keys(cfg, layer))
    if rule not in RULE_CONFIG_KEYS:
        raise ValueError(f"rule_config_digest: rule {rule!r} has no entry in RULE_CONFIG_KEYS")
    return config_digest(cfg, RULE_CONFIG_KEYS[rule])
