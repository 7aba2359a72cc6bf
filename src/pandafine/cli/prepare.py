"""Handlers of the data-preparation subcommands: check-config, download, calibrate, denoise, mosaic,
resample, cube, patches."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from pandafine.config import years
from pandafine.core.grid import Grid, grid_from_config
from pandafine.preprocess import calibrate as cal
from pandafine.preprocess import denoise as dn
from pandafine.preprocess.mosaic import mosaic_frames
from pandafine.preprocess.resample import DEFAULT_MIN_COVERAGE, resample_layer
from pandafine.sources.registry import download_layer
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
    elif args.layer == "landsat":
        cal.calibrate_landsat_year(cfg, args.input, args.output)
    elif args.layer == "luojia":
        require(args, "grid")
        cal.calibrate_luojia_year(cfg, args.input, read_grid(args.grid), args.output)
    else:
        cal.calibrate_dem(cfg, args.input, args.output)


def denoise(args, cfg: Mapping[str, Any]) -> None:
    if args.layer == "luojia":
        dn.denoise_luojia_year(cfg, args.input[0], args.output)
    else:
        require(args, "grid")
        dirs = {int(Path(d).name): Path(d) for d in args.input}
        dn.composite_landsat_year(cfg, args.year, dirs, read_grid(args.grid), args.output)


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
