"""Handlers of the data-preparation subcommands: check-config, download, calibrate, denoise, mosaic,
resample, cube, patches."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from pandafine.config import years
from pandafine.core.blocks import block_named, landsat_block_size
from pandafine.core.grid import Grid, grid_from_config
from pandafine.core.region import inside_outline, read_outline
from pandafine.preprocess import calibrate as cal
from pandafine.preprocess import denoise as dn
from pandafine.preprocess import landsat_composite as lc
from pandafine.preprocess.mosaic import mosaic_frames
from pandafine.preprocess.resample import DEFAULT_MIN_COVERAGE, resample_layer
from pandafine.sources.local import landsat_scenes
from pandafine.sources.registry import download_layer, source_kind
from pandafine.sources.stac import stac_block_source
from pandafine.tiles.cube import build_cube
from pandafine.tiles.patches import SplitParams, build_training_set


def require(args: argparse.Namespace, *names: str) -> None:
    """Stop with a usage message when an option this layer needs was not given."""
    for n in names:
        if getattr(args, n) is None:
            raise SystemExit(f"pandafine {args.command}: --{n.replace('_', '-')} is required for this layer")


def read_grid(path: Path) -> Grid:
    return Grid.read_json(path)


def check_config(args, cfg: Mapping[str, Any]) -> None:
    grid = grid_from_config(cfg)
    print(f"{args.config}: valid. Working grid {grid.width} x {grid.height} px of {grid.pixel_size:g} m, "
          f"bounds {tuple(round(b, 2) for b in grid.bounds)}, years {cfg['run']['first_year']}-"
          f"{cfg['run']['last_year']}")
    if args.grid_out:
        grid.write_json(args.grid_out)


def download(args, cfg: Mapping[str, Any]) -> None:
    yrs = cfg["run"]["target_years"] if args.layer == "luojia" else years(cfg)
    download_layer(cfg, args.layer, args.out, yrs)


def calibrate(args, cfg: Mapping[str, Any]) -> None:
    if args.layer == "panda":
        cal.calibrate_panda(cfg, args.input, args.output)
    elif args.layer == "luojia":
        require(args, "grid")
        cal.calibrate_luojia_year(cfg, args.input, read_grid(args.grid), args.output)
    else:
        cal.calibrate_dem(cfg, args.input, args.output)


def landsat_block(args, cfg: Mapping[str, Any]) -> None:
    import rasterio

    grid = read_grid(args.grid)
    block = block_named(grid, landsat_block_size(cfg), args.block)
    src = cfg["sources"]["landsat"]
    kind = source_kind(cfg, "landsat")
    sign, env = str, {}
    if kind == "stac":
        found = stac_block_source(cfg, grid, block.area, args.year)
        scenes, sign, env = list(found.scenes), found.sign, dict(found.gdal_env)
    elif kind == "local":
        scenes = landsat_scenes(src["path"], args.year, src.get("max_scenes"))
    elif kind == "synthetic":
        require(args, "raw")
        scenes = landsat_scenes(args.raw, args.year)
    else:
        raise SystemExit(f"key 'sources.landsat.kind': value {kind!r}: Landsat is read from a stac, local or "
                         "synthetic source")
    print(f"Landsat {args.year} block {block.name}: {len(scenes)} candidate scene(s) from the {kind} source")
    with rasterio.Env(**env):
        stats = lc.composite_block(scenes, grid, block, args.output, lc.CompositeParams.from_config(cfg),
                                   sign=sign, year=args.year)
    lc.write_block_record(Path(args.output).with_suffix(".json"), args.year, block, stats, kind)
    print(f"Landsat {args.year} block {block.name}: {stats.read} scene(s) read, {stats.resumed} taken from the "
          f"journal, {stats.outside} outside the block; clear observations on {100 * stats.clear:.1f} % of it")


def denoise(args, cfg: Mapping[str, Any]) -> None:
    if args.layer == "luojia":
        dn.denoise_luojia_year(cfg, args.input[0], args.output)
        return
    require(args, "grid")
    grid = read_grid(args.grid)
    size = landsat_block_size(cfg)
    composites: dict[int, dict[str, Path]] = {}
    for p in args.input:
        p = Path(p)
        if not p.parent.name.isdigit():
            raise SystemExit(f"{p}: expected a block composite {{year}}/{{block}}.tif")
        composites.setdefault(int(p.parent.name), {})[p.stem] = p
    blocks = [block_named(grid, size, name) for name in sorted(composites.get(args.year, {}))]
    if not blocks:
        raise SystemExit(f"--input: no block composite of {args.year} (expected .../{args.year}/{{block}}.tif)")
    mask = cfg["region"].get("mask")
    region = None
    if mask:  # coverage counts the pixels inside the region's outline only
        outline = read_outline(mask, grid.crs)
        region = lambda area: inside_outline(outline, grid, area)  # noqa: E731
    lc.composite_year(cfg, args.year, composites, grid, blocks, args.output, size, region=region)


def mosaic(args, cfg: Mapping[str, Any]) -> None:
    frames = sorted(p for p in Path(args.input).glob("*.tif"))
    if not frames:
        raise SystemExit(f"{args.input}: no denoised frame (*.tif) to mosaic")
    mosaic_frames(frames, read_grid(args.grid), args.output)


def resample(args, cfg: Mapping[str, Any]) -> None:
    method = cfg["preprocess"]["panda_resampling"] if args.layer == "panda" else None
    resample_layer(args.layer, args.input, read_grid(args.grid), args.output, method=method,
                   min_coverage=cfg["preprocess"].get("min_coverage", DEFAULT_MIN_COVERAGE),
                   panda_alignment=cfg["preprocess"].get("panda_alignment", "error"))


def cube(args, cfg: Mapping[str, Any]) -> None:
    build_cube(args.panda, args.landsat, args.dem, read_grid(args.grid), args.output, year=args.year,
               chunk=cfg["tiles"]["chunk"])


def patches(args, cfg: Mapping[str, Any]) -> None:
    if len(args.cubes) != len(args.targets):
        raise SystemExit(f"--cubes ({len(args.cubes)}) and --targets ({len(args.targets)}) differ in number")
    cubes = {int(Path(p).stem): p for p in args.cubes}
    targets = {int(Path(p).stem): p for p in args.targets}
    build_training_set(cubes, targets, args.output, SplitParams.from_config(cfg))
