"""Source kind -> downloader: the ``download`` stage of every layer goes through :func:`download_layer`.

Landsat from a ``stac`` or ``local`` source is not downloaded as a layer: each (year, block) job
(``pandafine landsat-block``) finds the scenes over its block and reads them in place
(:func:`pandafine.sources.stac.stac_block_source`, :func:`pandafine.sources.local.landsat_scenes`).
Only the synthetic source writes Landsat scenes (its simulated ones) in the download stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pandafine.sources.http import download_http
from pandafine.sources.local import download_local
from pandafine.sources.synthetic import download_synthetic

#: ``sources.{layer}.kind`` -> ``downloader(cfg, layer, out_dir, years)``, which fills ``out_dir`` and
#: writes its ``manifest.json``. The config schema lists which kinds each layer accepts.
DOWNLOADERS: dict[str, Callable[[Mapping[str, Any], str, Path, Sequence[int]], Path]] = {
    "synthetic": download_synthetic,
    "local": download_local,
    "http": download_http,
}
#: Kinds that are valid in the config but have nothing to download: the layer is read where it is, per block.
READ_IN_PLACE = {("landsat", "stac"), ("landsat", "local")}


def source_kind(cfg: Mapping[str, Any], layer: str) -> str:
    """The source kind of ``layer`` (``truth``, the synthetic scene's hidden radiance, is always synthetic)."""
    if layer == "truth":
        return "synthetic"
    return cfg["sources"].get(layer, {"kind": "synthetic"})["kind"]


def download_layer(cfg: Mapping[str, Any], layer: str, out_dir: str | Path, years: Sequence[int]) -> Path:
    """Fetch (or synthesize) ``layer``'s raw files for ``years`` into ``out_dir``; return its manifest path.

    Raises
    ------
    ValueError
        Landsat from a ``stac`` or ``local`` source (read per (year, block) by ``pandafine landsat-block``,
        never downloaded), or a kind without a downloader.
    """
    kind = source_kind(cfg, layer)
    if (layer, kind) in READ_IN_PLACE:
        raise ValueError(f"key 'sources.{layer}.kind': value {kind!r}: Landsat is not downloaded as a layer; it "
                         "is read per (year, block) by `pandafine landsat-block` (the workflow's landsat_block "
                         "jobs), which finds the scenes over each block and reads only the block's window of "
                         "each, so there is nothing to run `pandafine download --layer landsat` for")
    if kind not in DOWNLOADERS:  # the config check refuses unknown kinds first
        raise ValueError(f"key 'sources.{layer}.kind': {kind!r} is not one of {', '.join(sorted(DOWNLOADERS))}")
    return DOWNLOADERS[kind](cfg, layer, Path(out_dir), list(years))
