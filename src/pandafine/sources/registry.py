"""Source kind -> downloader: the ``download`` stage of every layer goes through :func:`download_layer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pandafine.sources.http import download_http
from pandafine.sources.local import download_local
from pandafine.sources.stac import download_stac
from pandafine.sources.synthetic import download_synthetic

#: ``sources.{layer}.kind`` -> ``downloader(cfg, layer, out_dir, years)``, which fills ``out_dir`` and
#: writes its ``manifest.json``. The config schema lists which kinds each layer accepts.
DOWNLOADERS: dict[str, Callable[[Mapping[str, Any], str, Path, Sequence[int]], Path]] = {
    "synthetic": download_synthetic,
    "local": download_local,
    "http": download_http,
    "stac": download_stac,
}


def source_kind(cfg: Mapping[str, Any], layer: str) -> str:
    """The source kind of ``layer`` (``truth``, the synthetic scene's hidden radiance, is always synthetic)."""
    if layer == "truth":
        return "synthetic"
    return cfg["sources"].get(layer, {"kind": "synthetic"})["kind"]


def download_layer(cfg: Mapping[str, Any], layer: str, out_dir: str | Path, years: Sequence[int]) -> Path:
    """Fetch (or synthesize) ``layer``'s raw files for ``years`` into ``out_dir``; return its manifest path."""
    kind = source_kind(cfg, layer)
    if kind not in DOWNLOADERS:  # the config check refuses unknown kinds first
        raise ValueError(f"key 'sources.{layer}.kind': {kind!r} is not one of {', '.join(sorted(DOWNLOADERS))}")
    return DOWNLOADERS[kind](cfg, layer, Path(out_dir), list(years))
