"""Write the synthetic scene's raw files in the real products' formats (the ``synthetic`` source).

:func:`download_synthetic` is what the ``download`` stage calls for a layer whose
``sources.{layer}.kind`` is ``synthetic``; ``truth`` writes the hidden truth
(``resources/synthetic``) for tests and evaluation. File layouts follow
docs/contracts.md. Years are generated in parallel on
:func:`pandafine.core.runtime.threads` threads (numpy and GDAL release the GIL);
each year uses its own random stream, so the files do not depend on the order.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from pandafine.core.atomic import write_text_atomic
from pandafine.core.grid import Grid, grid_from_config
from pandafine.core.raster_io import write_raster
from pandafine.core.runtime import threads
from pandafine.core.scaling import RADIANCE_UNITS
from pandafine.sources.manifest import write_manifest
from pandafine.synthetic import observe as obs
from pandafine.synthetic import scene as syn

LAYERS = ("panda", "landsat", "dem", "luojia", "truth")
#: Landsat bands are large and noisy: fast ZSTD instead of DEFLATE (GDAL reads both).
LANDSAT_COMPRESSION = {"compress": "zstd", "zstd_level": 1}
#: Internal overviews of the synthetic scenes, as Collection-2 COGs carry: SR bands averaged (fill excluded),
#: QA_PIXEL by nearest (bit flags cannot be averaged). How USGS builds its overviews is not documented in this
#: repository; the composite's dependence on it is measured in docs/results/2026-12-07-landsat-blocks.md.
LANDSAT_OVERVIEWS = (2, 4, 8)


def download_synthetic(cfg: Mapping[str, Any], layer: str, out_dir: Path,
                       years: list[int] | None = None) -> Path:
    """Write one layer of the synthetic scene into ``out_dir`` plus its ``manifest.json``.

    Parameters
    ----------
    cfg : mapping
        A validated config (``synthetic`` section, working grid, run years).
    layer : str
        ``panda``, ``landsat``, ``dem``, ``luojia`` (raw files as in docs/contracts.md) or ``truth``
        (``truth/radiance_{year}.tif`` on the working grid and ``scene.json``; ``out_dir`` is
        ``resources/synthetic``).
    out_dir : path
        The layer directory.
    years : list of int, optional
        Years to write; default ``run.first_year..run.last_year`` (``run.target_years`` for luojia).
        Ignored for dem (static).

    Returns
    -------
    pathlib.Path
        The manifest path (lists the files written by this call).
    """
    if layer not in LAYERS:
        raise ValueError(f"synthetic source: unknown layer '{layer}' (expected one of {', '.join(LAYERS)})")
    out_dir = Path(out_dir)
    run = cfg["run"]
    if years is None:
        years = list(run["target_years"]) if layer == "luojia" else list(range(run["first_year"], run["last_year"] + 1))
    years = sorted({int(y) for y in years})
    bad = [y for y in years if not syn.FIRST_YEAR <= y <= syn.LAST_YEAR]
    if bad:
        raise ValueError(f"synthetic {layer}: years {bad} are outside {syn.FIRST_YEAR}..{syn.LAST_YEAR}")
    grid = grid_from_config(cfg)
    scene = syn.SyntheticScene.from_config(cfg)
    writer = {"panda": write_panda, "landsat": write_landsat, "dem": write_dem, "luojia": write_luojia,
              "truth": write_truth}[layer]
    files = writer(scene, cfg, grid, out_dir, years)
    origin = f"synthetic:seed={scene.seed}"
    return write_manifest(out_dir, layer, "synthetic", [(f, origin) for f in files])


def _map_years(fn: Callable[[int], list[Path]], years: Sequence[int], desc: str, unit: str = "year") -> list[Path]:
    """Run ``fn`` for every year (threads from the runtime budget) with a progress bar; files in year order."""
    from tqdm import tqdm

    workers = max(1, min(threads(), len(years)))
    results: dict[int, list[Path]] = {}
    with tqdm(total=len(years), desc=desc, unit=unit) as bar:
        if workers == 1:
            for y in years:
                results[y] = fn(y)
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(fn, y): y for y in years}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
    return [p for y in years for p in results[y]]


def _centre_lonlat(grid: Grid) -> tuple[float, float]:
    from pyproj import Transformer

    l, b, r, t = grid.bounds
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform((l + r) / 2, (b + t) / 2)
    return float(lon), float(lat)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------

def panda_shift_m(cfg: Mapping[str, Any]) -> float:
    """``synthetic.panda_shift_m``: largest PANDA geolocation error per axis, metres (default 0)."""
    return float(cfg["synthetic"].get("panda_shift_m", 0.0))


def write_panda(scene: syn.SyntheticScene, cfg: Mapping[str, Any], grid: Grid, out_dir: Path,
                years: Sequence[int]) -> list[Path]:
    """PANDA-like year files: uint8 DN 0–63 (nodata 255), 1 km cells on the anchor lattice, grid CRS."""
    pgrid = obs.panda_grid(grid)
    cell = pgrid.pixel_size
    sub = max(1, math.ceil(cell / 125.0 - 1e-9))
    pad = obs.panda_pad_cells(cell)
    fields = scene.fields_on_grid(obs.panda_fine_grid(pgrid, sub, pad))
    pattern = cfg["sources"]["panda"].get("pattern", "PANDA_China_{year}.tif")

    def one(year: int) -> list[Path]:
        params = obs.panda_year(scene.seed, year, panda_shift_m(cfg))
        dn = obs.simulate_panda(scene.radiance(fields, year), params, cell, sub, pad)
        return [write_raster(out_dir / pattern.format(year=year), dn, pgrid, nodata=obs.PANDA_NODATA)]

    return _map_years(one, years, "synthetic panda")


def write_landsat(scene: syn.SyntheticScene, cfg: Mapping[str, Any], grid: Grid, out_dir: Path,
                  years: Sequence[int]) -> list[Path]:
    """Collection-2 L2-like scenes: ``{year}/{scene_id}/{scene_id}_SR_B{n}.TIF`` (uint16, nodata 0) and
    ``{scene_id}_QA_PIXEL.TIF`` (uint16; its fill value 1 is the nodata, as in real files), UTM, with internal
    overviews (:data:`LANDSAT_OVERVIEWS`)."""
    res = float(cfg["synthetic"]["landsat_resolution"])
    n = int(cfg["synthetic"]["scenes_per_year"])
    lgrid = obs.landsat_grid(grid, res)
    lon, lat = _centre_lonlat(grid)
    fields = scene.fields_on_grid(lgrid)
    water = fields.water > 0.5

    def one(year: int) -> list[Path]:
        truth = scene.reflectance(fields, year)
        files = []
        for spec in obs.landsat_scene_specs(scene, year, n, lon, lat):
            bands, qa = obs.simulate_landsat(truth, water, res, lgrid, spec, scene.seed)
            d = out_dir / str(year) / spec.scene_id
            for num, arr in bands.items():
                files.append(write_raster(d / f"{spec.scene_id}_SR_B{num}.TIF", arr, lgrid, nodata=0,
                                          overviews=LANDSAT_OVERVIEWS, overview_resampling="average",
                                          **LANDSAT_COMPRESSION))
            files.append(write_raster(d / f"{spec.scene_id}_QA_PIXEL.TIF", qa, lgrid, nodata=1,
                                      overviews=LANDSAT_OVERVIEWS, overview_resampling="nearest",
                                      **LANDSAT_COMPRESSION))
        return files

    return _map_years(one, years, "synthetic landsat")


def write_dem(scene: syn.SyntheticScene, cfg: Mapping[str, Any], grid: Grid, out_dir: Path,
              years: Sequence[int]) -> list[Path]:
    """Copernicus GLO-90-like tiles (float32, EPSG:4326, 3") for every tile touching the region + 0.02 deg."""
    tiles = obs.dem_tiles(syn.lonlat_bounds(grid, margin_deg=0.02))

    def one(i: int) -> list[Path]:
        lat, lon = tiles[i]
        tg = obs.dem_tile_grid(lat, lon)
        return [write_raster(out_dir / obs.dem_tile_name(lat, lon), scene.elevation_on_grid(tg), tg,
                             nodata=float("nan"))]

    return _map_years(one, list(range(len(tiles))), "synthetic dem", unit="tile")


def write_luojia(scene: syn.SyntheticScene, cfg: Mapping[str, Any], grid: Grid, out_dir: Path,
                 years: Sequence[int]) -> list[Path]:
    """Luojia-01-like frames: ``{year}/{frame_id}.tif`` (INT32 DN, EPSG:4326, 0 outside the footprint)
    and ``{year}/{frame_id}_meta.xml``."""
    n = int(cfg["synthetic"]["luojia_frames"])
    area = syn.lonlat_bounds(grid, margin_deg=0.005)

    def one(year: int) -> list[Path]:
        files = []
        for i, frame in enumerate(obs.luojia_frames(scene, year, n, area)):
            radiance = scene.radiance_on_grid(year, frame.content_grid, supersample=2)
            dn = obs.simulate_luojia(radiance, frame, scene.seed, i)
            d = out_dir / str(year)
            files.append(write_raster(d / f"{frame.frame_id}.tif", dn, frame.grid))
            files.append(write_text_atomic(d / f"{frame.frame_id}_meta.xml", obs.luojia_meta_xml(frame)))
        return files

    return _map_years(one, years, "synthetic luojia")


def write_truth(scene: syn.SyntheticScene, cfg: Mapping[str, Any], grid: Grid, out_dir: Path,
                years: Sequence[int]) -> list[Path]:
    """``truth/radiance_{year}.tif`` (float32 pixel-mean radiance, 2x2 points per pixel) on the working grid,
    and ``scene.json`` with the hidden parameters."""
    fields = scene.fields_on_grid(grid, 2)

    def one(year: int) -> list[Path]:
        radiance = scene.radiance_on_grid(year, grid, 2, fields=fields)
        return [write_raster(out_dir / "truth" / f"radiance_{year}.tif", radiance, grid, nodata=float("nan"),
                             band_names=["radiance"],
                             tags={"units": RADIANCE_UNITS, "year": year, "source": "synthetic truth",
                                   "seed": scene.seed})]

    files = _map_years(one, years, "synthetic truth")
    files.append(write_scene_json(scene, cfg, grid, out_dir / "scene.json", years))
    return files


def scene_record(scene: syn.SyntheticScene, cfg: Mapping[str, Any], grid: Grid,
                 years: Iterable[int] = ()) -> dict[str, Any]:
    """The hidden parameters of the scene for the run years (plus ``years``) and target years."""
    run = cfg["run"]
    all_years = sorted(set(range(run["first_year"], run["last_year"] + 1)) | set(years))
    lon, lat = _centre_lonlat(grid)
    n = int(cfg["synthetic"]["scenes_per_year"])
    landsat = {y: obs.landsat_scene_specs(scene, y, n, lon, lat) for y in all_years}
    area = syn.lonlat_bounds(grid, margin_deg=0.005)
    luojia = {y: obs.luojia_frames(scene, y, int(cfg["synthetic"]["luojia_frames"]), area)
              for y in sorted(run["target_years"])}
    rec = obs.scene_summary(scene, all_years, landsat, luojia, grid, panda_shift_m=panda_shift_m(cfg))
    rec["landsat_grid"] = obs.landsat_grid(grid, float(cfg["synthetic"]["landsat_resolution"])).to_dict()
    return rec


def write_scene_json(scene: syn.SyntheticScene, cfg: Mapping[str, Any], grid: Grid, path: Path,
                     years: Iterable[int] = ()) -> Path:
    """Write :func:`scene_record` as JSON (sorted keys, so identical scenes give identical bytes)."""
    rec = scene_record(scene, cfg, grid, years)
    return write_text_atomic(path, json.dumps(rec, indent=1, sort_keys=True, allow_nan=False) + "\n")


def read_scene_json(path: str | Path) -> dict[str, Any]:
    """Read ``scene.json``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable synthetic scene record ({exc})") from exc
