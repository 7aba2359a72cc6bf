"""Load and validate the workflow config.

The JSON schema (``schemas/config.schema.json``, also used by the Snakefile
through ``snakemake.utils.validate``) checks structure and ranges; the checks
here add what a schema cannot say (first year <= last year, target years inside
the span, patch size a multiple of the grid factor, ...). Every error names the
key, the value found and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import string
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from pandafine.core.blocks import block_size_errors
from pandafine.sources.http import check_http_source
from pandafine.sources.stac import check_stac_source

FIRST_YEAR, LAST_YEAR = 1984, 2020


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range."""


def schema() -> dict[str, Any]:
    """The config JSON schema shipped with the package."""
    return json.loads(resources.files("pandafine").joinpath("schemas/config.schema.json").read_text())


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _schema_errors(cfg: Mapping[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    messages = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        key = _key_path(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            for name in extra:
                full = f"{key}.{name}" if err.absolute_path else name
                messages.append(f"unknown key '{full}' (allowed here: {', '.join(allowed)})")
        elif err.validator == "required":
            messages.append(f"missing key under '{key}': {err.message}")
        else:
            messages.append(f"key '{key}': value {err.instance!r} is not allowed: {err.message}")
    return messages


def _semantic_errors(cfg: Mapping[str, Any]) -> list[str]:
    msgs = []
    run = cfg["run"]
    if run["first_year"] > run["last_year"]:
        msgs.append(f"key 'run.first_year': value {run['first_year']} is after run.last_year={run['last_year']}")
    for y in run["target_years"]:
        if not run["first_year"] <= y <= run["last_year"]:
            msgs.append(f"key 'run.target_years': year {y} is outside run.first_year..run.last_year "
                        f"({run['first_year']}..{run['last_year']})")
    w, s, e, n = cfg["region"]["bbox"]
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        msgs.append(f"key 'region.bbox': value {[w, s, e, n]} must be [west, south, east, north] "
                    "with -180<=west<east<=180 and -90<=south<north<=90")
    factor = cfg["grid"]["factor"]
    patch = cfg["tiles"]["patch"]
    if patch % factor:
        msgs.append(f"key 'tiles.patch': value {patch} must be a multiple of grid.factor={factor}")
    halo = tiles_halo(cfg)
    if halo % factor:
        msgs.append(f"key 'tiles.halo': value {halo} must be a multiple of grid.factor={factor} (patches with "
                    "their halo start on the 1 km cells)")
    tile = cfg["infer"]["tile"]
    if tile % factor:
        msgs.append(f"key 'infer.tile': value {tile} must be a multiple of grid.factor={factor}")
    msgs.extend(block_size_errors(int(cfg["grid"].get("block", 0)), factor, int(cfg["product"]["blocksize"])))
    overlap = cfg["infer"]["overlap"]
    if isinstance(overlap, int) and overlap >= tile:
        msgs.append(f"key 'infer.overlap': value {overlap} px must be less than infer.tile={tile}")
    fr = cfg["tiles"]["fractions"]
    total = fr["train"] + fr["val"] + fr["test"]
    if abs(total - 1.0) > 1e-6:
        msgs.append(f"key 'tiles.fractions': values {fr} must add up to 1 (they add up to {total:g})")
    allow_http = bool(cfg.get("download", {}).get("allow_http", False))
    msgs.extend(panda_pattern_errors(cfg["sources"].get("panda", {})))
    for layer, src in cfg["sources"].items():
        kind = src["kind"]
        if kind == "local" and "path" not in src:
            msgs.append(f"key 'sources.{layer}.path' is required when sources.{layer}.kind is 'local'")
        if kind == "http":
            msgs.extend(check_http_source(layer, src, allow_http))
        if kind == "stac":
            msgs.extend(check_stac_source(layer, cfg, allow_http))
        if kind not in ("synthetic", "local", "http", "stac"):
            msgs.append(f"key 'sources.{layer}.kind': value '{kind}' is not available yet "
                        "(implemented: synthetic, local, http, stac)")
    return msgs


def panda_pattern_errors(src: Mapping[str, Any]) -> list[str]:
    """``sources.panda.pattern`` must name a file for each year: ``{year}`` once, no directory part, no ``..``."""
    pattern = src.get("pattern")
    if pattern is None:
        return []
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        return [f"key 'sources.panda.pattern': value {pattern!r} is not a valid template ({exc})"]
    msgs = []
    if fields != ["year"]:
        msgs.append(f"key 'sources.panda.pattern': value {pattern!r} must contain {{year}} once and no other "
                    f"field (found {fields})")
    if "/" in pattern or "\\" in pattern or pattern.startswith(".") or ".." in pattern:
        msgs.append(f"key 'sources.panda.pattern': value {pattern!r} must be a file name (no directory, no "
                    "'..', not hidden); put the directory in sources.panda.path")
    return msgs


def validate_config(cfg: Mapping[str, Any], *, source: str = "config") -> Mapping[str, Any]:
    """Raise :class:`ConfigError` listing every problem in ``cfg``; return it unchanged if valid."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values, got {type(cfg).__name__}")
    msgs = _schema_errors(cfg)
    if not msgs:
        msgs = _semantic_errors(cfg)
    if msgs:
        raise ConfigError(f"{source}: invalid config:\n  - " + "\n  - ".join(msgs))
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    import yaml

    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    validate_config(cfg, source=str(path))
    return cfg


def infer_precision(cfg: Mapping[str, Any]) -> str:
    """``infer.precision`` of a validated config: fp32 (the default), fp16 or int8."""
    return str(cfg["infer"].get("precision", "fp32"))


#: Default of ``infer.level_max_blocks`` (the schema states it too).
LEVEL_MAX_BLOCKS = 8


def level_max_blocks(cfg: Mapping[str, Any]) -> int:
    """``infer.level_max_blocks`` of a validated config: spatial blocks per target year the level is measured on."""
    return int(cfg["infer"].get("level_max_blocks", LEVEL_MAX_BLOCKS))


def tiles_halo(cfg: Mapping[str, Any]) -> int:
    """``tiles.halo`` of a config: px of input context around each training patch (0 without the key)."""
    return int(cfg["tiles"].get("halo", 0) or 0)


def years(cfg: Mapping[str, Any]) -> list[int]:
    """All product years of a config, in order."""
    return list(range(cfg["run"]["first_year"], cfg["run"]["last_year"] + 1))


def config_hash(cfg: Mapping[str, Any]) -> str:
    """sha256 of the config's canonical JSON form (key order does not matter)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
