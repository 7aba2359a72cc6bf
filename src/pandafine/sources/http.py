"""The ``http`` source: fetch a layer's raw files from URLs into ``resources/raw/{layer}/``.

* **panda**: ``sources.panda.url`` is a template with ``{year}`` and/or ``{name}``
  (``name`` = ``sources.panda.pattern`` for the year, default
  ``PANDA_China_{year}.tif``); each year's file is saved as ``name``. A missing
  year (HTTP 404) is an error naming the URL.
* **dem**: without ``sources.dem.url``, the Copernicus GLO-90 tiles covering
  ``region.bbox`` plus a small margin, from the public bucket, saved as
  ``{tile name}.tif``; with ``url``, a template with ``{lat}``, ``{lon}``,
  ``{NS}``, ``{EW}`` (see :mod:`pandafine.sources.dem`) expanded for the same
  tiles (e.g. an SRTM mirror), each saved under its URL's file name. Tiles the
  server does not have (404: ocean) are skipped; no tile at all is an error.

``sources.{layer}.sha256`` maps file names to expected checksums; every file's
sha256 and URL are recorded in the layer's ``manifest.json`` in any case. The
``download`` config section sets the :class:`~pandafine.sources.fetch.HttpPolicy`.
"""

from __future__ import annotations

import logging
import re
import string
from pathlib import Path
from typing import Mapping, Sequence

from pandafine.sources.dem import DEFAULT_MARGIN_DEG, check_template, copernicus_url, expand_template, tiles_for_bbox
from pandafine.sources.fetch import DownloadItem, HttpPolicy, check_url, fetch_many, name_from_url, safe_relpath
from pandafine.sources.manifest import write_manifest

log = logging.getLogger(__name__)

PANDA_FIELDS = frozenset({"year", "name"})


def policy_from_config(cfg: Mapping) -> HttpPolicy:
    """The download policy of a config (its optional ``download`` section)."""
    try:
        return HttpPolicy.from_mapping(cfg.get("download"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"key 'download': {exc}") from None


def check_http_source(layer: str, src: Mapping, allow_http: bool = False) -> list[str]:
    """Problems of an ``http`` source config, as config-error messages (empty list when fine).

    For :func:`pandafine.config.validate_config`: the layer must be panda or dem,
    panda needs a ``url`` template using ``{year}``/``{name}`` only, a dem ``url``
    may use the tile fields of :data:`pandafine.sources.dem.TEMPLATE_FIELDS`, and
    the URL scheme must be https (or http with ``download.allow_http``).
    """
    key = f"sources.{layer}"
    if layer not in ("panda", "dem"):
        return [f"key '{key}.kind': value 'http' is available for panda and dem only (use local)"]
    url = src.get("url")
    if url is None:
        if layer == "panda":
            return [f"key '{key}.url' is required when {key}.kind is 'http' (a URL template with {{year}} or {{name}})"]
        return []  # dem: the built-in Copernicus GLO-90 tile list
    msgs = []
    try:
        if layer == "panda":
            panda_items(src, [2000])
        else:
            check_template(url, key=f"key '{key}.url'")
    except (ValueError, KeyError, IndexError) as exc:
        msgs.append(str(exc))
    probe = re.sub(r"\{[^{}]*\}", "x", url)  # template fields filled with a dummy value
    try:
        check_url(probe, HttpPolicy(allow_http=allow_http))
    except ValueError as exc:
        msgs.append(f"key '{key}.url': " + str(exc).replace(repr(probe), repr(url)))
    return msgs


def panda_items(src: Mapping, years: Sequence[int]) -> list[DownloadItem]:
    """One required item per year from the PANDA URL template."""
    template = src.get("url")
    if not template:
        raise ValueError("key 'sources.panda.url' is required when sources.panda.kind is 'http' "
                         "(a URL template with {year} or {name})")
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if not used or not used <= PANDA_FIELDS:
        raise ValueError(f"key 'sources.panda.url': value {template!r} must use {{year}} and/or {{name}} "
                         f"and no other field (found {sorted(used)})")
    pattern = src.get("pattern", "PANDA_China_{year}.tif")
    checks = src.get("sha256") or {}
    items = []
    for y in years:
        name = safe_relpath(pattern.format(year=y))
        items.append(DownloadItem(template.format(year=y, name=name), name, checks.get(name)))
    return items


def dem_items(src: Mapping, bbox: Sequence[float], margin: float = DEFAULT_MARGIN_DEG) -> list[DownloadItem]:
    """One optional item per 1-degree tile of ``bbox`` (+ ``margin``): Copernicus GLO-90 or ``url`` template."""
    template = src.get("url")
    checks = src.get("sha256") or {}
    items = []
    for tile in tiles_for_bbox(bbox, margin):
        if template:
            url = expand_template(template, tile, key="sources.dem.url")
            name = name_from_url(url)
        else:
            url = copernicus_url(tile)
            name = tile.copernicus_name + ".tif"
        items.append(DownloadItem(url, name, checks.get(name), optional=True))
    return items


def download_http(cfg: Mapping, layer: str, out_dir: str | Path, years: Sequence[int]) -> Path:
    """Download a layer's files into ``out_dir`` and write its manifest; return the manifest path.

    Parameters
    ----------
    cfg : mapping
        The config (``sources.{layer}``, ``region.bbox``, optional ``download``).
    layer : {'panda', 'dem'}
        Layers available over plain URLs.
    out_dir : path
        The layer directory (``resources/raw/{layer}``).
    years : sequence of int
        Years to fetch (PANDA).

    Raises
    ------
    pandafine.sources.fetch.DownloadError
        A file could not be fetched (the message names the URL and the cause);
        no partial file is left in ``out_dir``.
    ValueError
        Bad URL template, scheme or file name, or a layer without http support.
    FileNotFoundError
        No DEM tile of the region exists on the server.
    """
    src = cfg["sources"][layer]
    out_dir = Path(out_dir)
    policy = policy_from_config(cfg)
    if layer == "panda":
        items = panda_items(src, years)
    elif layer == "dem":
        items = dem_items(src, cfg["region"]["bbox"])
    else:
        raise ValueError(f"key 'sources.{layer}.kind': value 'http' is not supported for {layer} "
                         "(http is available for panda and dem; use local)")
    if not items:
        raise ValueError(f"sources.{layer}: nothing to download (no year given)")
    unused = sorted(set(src.get("sha256") or {}) - {it.name for it in items})
    if unused:
        log.warning("sources.%s.sha256 lists file(s) not downloaded here: %s", layer, ", ".join(unused))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = fetch_many(items, out_dir, policy)
    got = [r for r in results if r is not None]
    skipped = [it.url for it, r in zip(items, results) if r is None]
    if skipped:
        log.info("%s: %d tile(s) not on the server (ocean), skipped: %s", layer, len(skipped), ", ".join(skipped))
    if not got:
        raise FileNotFoundError(f"sources.{layer}: none of the {len(items)} file(s) for region.bbox="
                                f"{list(cfg['region']['bbox'])} exists on the server (first: {items[0].url})")
    return write_manifest(out_dir, layer, "http", [(r.path, r.url) for r in got])
