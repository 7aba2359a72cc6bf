"""Reproducibility check of the yearly products against their recorded provenance.

:func:`record_provenance` writes ``provenance.json`` next to the COGs of a product
directory (``results/panda_fine/``)::

    {"format": "pandafine-provenance/1",
     "model": {"path": <relative to the product directory>, "sha256": hex} | null,
     "config_sha256": hex | null,
     "products": {"PANDA-FINE_2018.tif": {
         "sha256": hex, "size": int,
         "tags": {<the COG's provenance tags: year, model, model_sha256, config_sha256, ...>},
         "inputs": {"cube": {"path": <relative to the product directory>, "sha256": tree digest}}}}}

:func:`verify_products` rechecks a product directory against that record and against
the present model, config and input cubes, and returns every drift found (a COG that
changed by a single byte, a tag that changed, a model or config or cube whose checksum
is no longer the one the products were made from, a product missing or unrecorded).

A directory's tree digest (:func:`tree_sha256`) is the sha256 of the sorted lines
``<relative path>\\0<file sha256>\\n`` of every file under it, so it changes when any file of a
Zarr store changes, appears or disappears.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TextIO

from pandafine.config import config_hash, load_config
from pandafine.config_keys import product_config
from pandafine.core.atomic import write_text_atomic
from pandafine.core.checksums import remembered_sha256, sha256_file, tree_sha256
from pandafine.models import model_filename

#: File written by :func:`record_provenance` in the product directory.
PROVENANCE_NAME = "provenance.json"
FORMAT = "pandafine-provenance/1"
#: Product file names recognised in a product directory.
PRODUCT_GLOB = "PANDA-FINE_*.tif"
#: COG tags that describe how a product was made (compared on verification).
PROVENANCE_TAGS = ("product", "year", "units", "model", "model_sha256", "config_sha256",
                   "input_sha256", "pandafine_version")


@dataclass(frozen=True)
class Drift:
    """One difference between a product directory and its recorded provenance.

    Attributes
    ----------
    path : str
        The file that changed (product COG, model, config or input).
    what : str
        What changed (``sha256``, ``tag model_sha256``, ``missing``, ...).
    recorded, current : str
        The recorded value and the value found now (``""`` when not applicable).
    """

    path: str
    what: str
    recorded: str = ""
    current: str = ""

    def __str__(self) -> str:
        if self.recorded or self.current:
            return f"{self.path}: {self.what} changed: recorded {self.recorded or '-'}, now {self.current or '-'}"
        return f"{self.path}: {self.what}"


def read_tags(cog: str | os.PathLike) -> dict[str, str]:
    """The provenance tags (:data:`PROVENANCE_TAGS`) present in a COG's dataset tags."""
    import rasterio

    with rasterio.open(cog) as ds:
        tags = ds.tags()
    return {k: tags[k] for k in PROVENANCE_TAGS if k in tags}


def _rel(path: str | os.PathLike, product_dir: Path) -> str:
    """``path`` relative to the product directory (so a moved results tree keeps its record)."""
    return Path(os.path.relpath(Path(path).resolve(), product_dir.resolve())).as_posix()


def _products(product_dir: Path) -> list[Path]:
    return sorted(product_dir.glob(PRODUCT_GLOB))


def _config_digest(config: str | os.PathLike) -> str:
    """What a product's ``config_sha256`` tag holds for this config file: the hash of its product part."""
    return config_hash(product_config(load_config(config)))


def recorded_config(product_dir: str | os.PathLike) -> Path | None:
    """The config file ``provenance.json`` says the products were made with, if it is recorded and exists."""
    path = Path(product_dir) / PROVENANCE_NAME
    if not path.is_file():
        return None
    rec = (json.loads(path.read_text()).get("config") or {}).get("path")
    if not rec:
        return None
    config = (Path(product_dir) / rec).resolve()
    return config if config.is_file() else None


def default_inputs(product_dir: str | os.PathLike) -> dict[str, Path | None]:
    """Model, config and cube directory of the standard layout around ``results/panda_fine``.

    The config is the one ``provenance.json`` records (the workflow writes it as
    ``results/config/{hash}.yaml`` and never overwrites it), else ``results/config.yaml``;
    the model is the one it names (``results/models/{model.name}/model.onnx``, or
    ``model.{fp16,int8}.onnx`` as ``infer.precision`` says); the cubes are
    ``results/tiles/cube/``. Each is ``None`` when it does not exist.
    """
    results = Path(product_dir).resolve().parent
    config = recorded_config(product_dir)
    if config is None and (results / "config.yaml").is_file():
        config = results / "config.yaml"
    model = None
    if config is not None:
        import yaml

        cfg = yaml.safe_load(config.read_text()) or {}
        name = (cfg.get("model") or {}).get("name")
        fname = model_filename(str((cfg.get("infer") or {}).get("precision", "fp32")))
        if name and (results / "models" / name / fname).is_file():
            model = results / "models" / name / fname
    cubes = results / "tiles" / "cube"
    return {"config": config, "model": model, "cubes": cubes if cubes.is_dir() else None}


def record_provenance(product_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
                      config: str | os.PathLike | None = None,
                      cubes: str | os.PathLike | None = None) -> Path:
    """Write ``product_dir/provenance.json``: each product's sha256, size, tags and inputs.

    The cubes' digests are those the cube stage wrote beside each cube
    (:func:`pandafine.core.checksums.remembered_sha256`), computed here only if missing or stale.

    Parameters
    ----------
    product_dir : path
        Directory of ``PANDA-FINE_{year}.tif`` files.
    model : path, optional
        The ONNX model the products were made with (its sha256 is recorded).
    config : path, optional
        The workflow config they were made with (its :func:`pandafine.config.config_hash`).
    cubes : path, optional
        Directory of the inference cubes ``{year}.zarr``; each product records the tree
        digest of its year's cube.

    Returns
    -------
    pathlib.Path
        The provenance file.
    """
    product_dir = Path(product_dir)
    cogs = _products(product_dir)
    if not cogs:
        raise FileNotFoundError(f"{product_dir}: no product ({PRODUCT_GLOB}) to record")
    products: dict[str, Any] = {}
    for cog in cogs:
        tags = read_tags(cog)
        entry: dict[str, Any] = {"sha256": sha256_file(cog), "size": cog.stat().st_size, "tags": tags,
                                 "inputs": {}}
        if cubes is not None:
            if "year" not in tags:
                raise ValueError(f"{cog}: no 'year' tag; cannot tell which cube under {cubes} it came from")
            cube = Path(cubes) / f"{int(tags['year'])}.zarr"
            entry["inputs"]["cube"] = {"path": _rel(cube, product_dir), "sha256": remembered_sha256(cube)}
        products[cog.name] = entry
    doc = {
        "format": FORMAT,
        "model": None if model is None else {"path": _rel(model, product_dir), "sha256": sha256_file(Path(model))},
        "config_sha256": None if config is None else _config_digest(config),
        "config": None if config is None else {"path": _rel(config, product_dir)},
        "products": products,
    }
    return write_text_atomic(product_dir / PROVENANCE_NAME, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``provenance.json`` and check its structure; ``ValueError`` names the problem."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no provenance record; write one with `pandafine verify --record`") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r}, expected {FORMAT!r}")
    for name, entry in doc.get("products", {}).items():
        missing = {"sha256", "size", "tags", "inputs"} - set(entry)
        if missing:
            raise ValueError(f"{path}: products[{name!r}] lacks {sorted(missing)}")
    return doc


def _compare_tags(cog: Path, recorded: Mapping[str, str], current: Mapping[str, str]) -> list[Drift]:
    return [Drift(str(cog), f"tag {key}", recorded.get(key, ""), current.get(key, ""))
            for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)]


def verify_products(product_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
                    config: str | os.PathLike | None = None,
                    cubes: str | os.PathLike | None = None) -> list[Drift]:
    """Recheck a product directory against ``provenance.json`` and the inputs given.

    Parameters
    ----------
    product_dir : path
        Directory with the products and ``provenance.json``.
    model : path, optional
        The model now in place: its sha256 must equal every product's ``model_sha256`` tag
        (and the recorded model's sha256).
    config : path, optional
        The config now in place: its hash must equal every product's ``config_sha256`` tag.
    cubes : path, optional
        Directory of ``{year}.zarr`` cubes: each product's recorded cube digest (and its
        ``input_sha256`` tag, when the product has one) must match the cube now there.

    Returns
    -------
    list of Drift
        Empty when everything matches.
    """
    product_dir = Path(product_dir)
    doc = read_provenance(product_dir / PROVENANCE_NAME)
    drifts: list[Drift] = []
    recorded = doc["products"]
    present = {p.name: p for p in _products(product_dir)}
    for name in sorted(set(present) - set(recorded)):
        drifts.append(Drift(str(present[name]), f"not recorded in {PROVENANCE_NAME}"))

    model_sha = config_sha = None
    if model is not None:
        model_sha = sha256_file(Path(model))
        if doc.get("model") and doc["model"]["sha256"] != model_sha:
            drifts.append(Drift(str(model), "model sha256", doc["model"]["sha256"], model_sha))
    if config is not None:
        config_sha = _config_digest(config)
        if doc.get("config_sha256") and doc["config_sha256"] != config_sha:
            drifts.append(Drift(str(config), "config sha256", doc["config_sha256"], config_sha))

    cube_digests: dict[str, str] = {}
    for name in sorted(recorded):
        entry = recorded[name]
        cog = product_dir / name
        if name not in present:
            drifts.append(Drift(str(cog), "missing"))
            continue
        sha = sha256_file(cog)
        if sha != entry["sha256"]:
            drifts.append(Drift(str(cog), "sha256", entry["sha256"], sha))
        tags = read_tags(cog)
        drifts.extend(_compare_tags(cog, entry["tags"], tags))
        if model_sha is not None and tags.get("model_sha256") != model_sha:
            drifts.append(Drift(str(cog), f"model {model} differs from tag model_sha256",
                                tags.get("model_sha256", ""), model_sha))
        if config_sha is not None and tags.get("config_sha256") != config_sha:
            drifts.append(Drift(str(cog), f"config {config} differs from tag config_sha256",
                                tags.get("config_sha256", ""), config_sha))
        if cubes is not None and "year" in tags:
            cube = Path(cubes) / f"{int(tags['year'])}.zarr"
            if not cube.exists():
                drifts.append(Drift(str(cube), f"input cube of {name} missing"))
                continue
            digest = cube_digests.setdefault(str(cube), tree_sha256(cube))
            rec = entry["inputs"].get("cube", {}).get("sha256")
            if rec is not None and rec != digest:
                drifts.append(Drift(str(cube), f"input cube of {name} sha256", rec, digest))
            if "input_sha256" in tags and tags["input_sha256"] != digest:
                drifts.append(Drift(str(cube), f"input cube differs from tag input_sha256 of {name}",
                                    tags["input_sha256"], digest))
    return drifts


def run_verify(product_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
               config: str | os.PathLike | None = None, cubes: str | os.PathLike | None = None,
               record: bool = False, discover: bool = True, out: TextIO | None = None) -> int:
    """The ``pandafine verify`` command: record or check provenance, print a report.

    Parameters
    ----------
    product_dir : path
        ``results/panda_fine`` (or any directory of products).
    model, config, cubes : path, optional
        Inputs to check against (or to record); when ``discover`` is true, each one not given
        is taken from the standard layout (:func:`default_inputs`) if it exists there.
    record : bool
        Write ``provenance.json`` instead of checking.
    discover : bool
        Look up inputs not given in the standard layout.
    out : text stream, optional
        Where the report goes (default: standard output).

    Returns
    -------
    int
        0 when recorded or when nothing drifted, 1 when something drifted.
    """
    import sys

    out = out or sys.stdout
    product_dir = Path(product_dir)
    if not product_dir.is_dir():
        raise FileNotFoundError(f"product directory not found: {product_dir}")
    if discover:
        found = default_inputs(product_dir)
        model = model if model is not None else found["model"]
        config = config if config is not None else found["config"]
        cubes = cubes if cubes is not None else found["cubes"]
    inputs = ", ".join(f"{k} {v}" for k, v in (("model", model), ("config", config), ("cubes", cubes))
                       if v is not None) or "no inputs"
    if record:
        path = record_provenance(product_dir, model=model, config=config, cubes=cubes)
        n = len(json.loads(path.read_text())["products"])
        print(f"{path}: recorded {n} products ({inputs})", file=out)
        return 0
    drifts = verify_products(product_dir, model=model, config=config, cubes=cubes)
    n = len(read_provenance(product_dir / PROVENANCE_NAME)["products"])
    if not drifts:
        print(f"{product_dir}: {n} products match {PROVENANCE_NAME} ({inputs})", file=out)
        return 0
    for d in drifts:
        print(f"DRIFT {d}", file=out)
    print(f"{product_dir}: {len(drifts)} drift(s) against {PROVENANCE_NAME} ({inputs})", file=out)
    return 1
