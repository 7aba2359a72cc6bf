"""The ``pandafine`` command line: one subcommand per workflow stage.

Each subcommand reads the config, does one stage's work on the files it is
given and writes its outputs atomically, so every stage runs with or without
Snakemake. ``--threads`` caps every thread pool in the process (BLAS/OpenMP,
GDAL, dask, PyTorch, onnxruntime) and is set from the rule's ``threads``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

LAYERS = ("panda", "landsat", "dem", "luojia")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config.yaml", type=Path, help="workflow config (YAML); default: %(default)s")
    p.add_argument("--threads", default=1, type=int,
                   help="threads this job may use (capped at the CPU count); default: %(default)s")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="pandafine", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pandafine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    def cmd(name, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        _add_common(p)
        return p

    p = cmd("check-config", "validate a config file and print the working grid it defines")
    p.add_argument("--grid-out", type=Path, help="also write the grid as JSON here")

    p = cmd("download", "fetch (or synthesize) one layer's raw files into resources/raw/{layer}/ with a manifest")
    p.add_argument("--layer", required=True, choices=LAYERS + ("truth",))
    p.add_argument("--out", required=True, type=Path, help="layer directory to fill")

    p = cmd("calibrate", "calibrate one layer (and year): DN to physical units, masks, inter-calibration")
    p.add_argument("--layer", required=True, choices=LAYERS)
    p.add_argument("--year", type=int, help="year (all layers but dem)")
    p.add_argument("--input", required=True, type=Path, help="raw file (panda) or directory (landsat, luojia, dem)")
    p.add_argument("--grid", type=Path, help="results/grid.json (luojia)")
    p.add_argument("--output", required=True, type=Path, help="output file (panda, dem) or directory")

    p = cmd("denoise", "denoise Luojia frames of a year, or composite a year of Landsat onto the working grid")
    p.add_argument("--layer", required=True, choices=("luojia", "landsat"))
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--input", required=True, type=Path, nargs="+",
                   help="luojia: the calibrated year directory; landsat: calibrated year directories (this year "
                        "and its neighbours, for gap filling)")
    p.add_argument("--grid", type=Path, help="results/grid.json (landsat)")
    p.add_argument("--output", required=True, type=Path)

    p = cmd("mosaic", "feathered mosaic of a year's denoised Luojia frames onto the working grid")
    p.add_argument("--input", required=True, type=Path, help="denoised frame directory of the year")
    p.add_argument("--grid", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)

    p = cmd("resample", "resample one layer onto the working grid")
    p.add_argument("--layer", required=True, choices=("panda", "landsat", "dem"))
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--grid", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)

    p = cmd("cube", "stack one year's resampled layers into an inference cube (Zarr)")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--panda", required=True, type=Path)
    p.add_argument("--landsat", required=True, type=Path)
    p.add_argument("--dem", required=True, type=Path)
    p.add_argument("--grid", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)

    p = cmd("patches", "cut training patches with a seeded, spatially blocked train/val/test split (Zarr)")
    p.add_argument("--cubes", required=True, type=Path, nargs="+", help="cube/{year}.zarr of the target years")
    p.add_argument("--targets", required=True, type=Path, nargs="+", help="target/{year}.tif, same order")
    p.add_argument("--output", required=True, type=Path)

    p = cmd("train", "train the configured model on the training patches (resumable)")
    p.add_argument("--tiles", required=True, type=Path, help="results/tiles/train.zarr")
    p.add_argument("--out", required=True, type=Path, help="model directory")

    p = cmd("evaluate", "evaluate the model and the interpolation baseline on the test split")
    p.add_argument("--tiles", required=True, type=Path)
    p.add_argument("--model-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="directory for metrics.json and figures")

    p = cmd("temporal", "temporal generalization: yearly products (and the baseline) against the synthetic truth")
    p.add_argument("--products", required=True, type=Path, nargs="+", help="PANDA-FINE_{year}.tif files")
    p.add_argument("--truths", required=True, type=Path, nargs="+", help="truth/radiance_{year}.tif files")
    p.add_argument("--panda", type=Path, nargs="+", help="resampled PANDA {year}.tif files (for the baseline)")
    p.add_argument("--metrics", required=True, type=Path, help="the model's metrics.json (baseline coefficients)")
    p.add_argument("--output", required=True, type=Path, help="temporal.json")

    p = cmd("ablation", "train and evaluate the MMNTLSR ablation rows; write ablation.csv and ablation.md")
    p.add_argument("--tiles", required=True, type=Path, help="results/tiles/train.zarr")
    p.add_argument("--out", required=True, type=Path, help="ablation directory (one sub-directory per row)")
    p.add_argument("--epochs", type=int, help="train.epochs of every trained row (default: the config's)")
    p.add_argument("--rows", help="comma-separated row numbers 1-9 (default: all)")
    p.add_argument("--seeds", help="comma-separated training seeds: every trained row once per seed, mean and "
                                   "spread in the table (default: one run with run.seed)")

    p = cmd("design-space", "train (or reuse) and evaluate models x samplers x steps x precisions; write "
                            "design_space.csv and design_space.md")
    p.add_argument("--tiles", required=True, type=Path, help="results/tiles/train.zarr")
    p.add_argument("--out", required=True, type=Path, help="design-space directory (models/<label>/ inside)")
    p.add_argument("--spec", type=Path, help="YAML with the design_space section (default: the config's, else "
                                             "pandafine.design_space.DEFAULT_SPEC)")
    p.add_argument("--epochs", type=int, help="train.epochs of every model (default: the spec's, else the config's)")

    p = cmd("export", "export the trained model to ONNX and check it against PyTorch")
    p.add_argument("--tiles", required=True, type=Path)
    p.add_argument("--model-dir", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)

    p = cmd("quantize", "write the fp16 or int8 version of the exported ONNX model (calibrated on training tiles)")
    p.add_argument("--tiles", required=True, type=Path, help="results/tiles/train.zarr")
    p.add_argument("--model", required=True, type=Path, help="the fp32 model.onnx")
    p.add_argument("--precision", required=True, choices=("fp16", "int8"))
    p.add_argument("--output", required=True, type=Path, help="model.{precision}.onnx (a .json record beside it)")

    p = cmd("precision", "compare fp32, fp16 and int8 models on the test split; write precision.json and .md")
    p.add_argument("--tiles", required=True, type=Path, help="results/tiles/train.zarr")
    p.add_argument("--model-dir", required=True, type=Path, help="directory of the fp32 model.onnx")
    p.add_argument("--out", required=True, type=Path, help="directory for the converted models and the table")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median counts); default: %(default)s")

    p = cmd("infer", "tiled, blended inference of one year into a Cloud-Optimized GeoTIFF")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--cube", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path,
                   help="model.onnx (or its fp16/int8 variant); for diffusion/flow models their checkpoint.pt, "
                        "sampled tile by tile in PyTorch (infer.ensemble > 1: a second band with the spread)")
    p.add_argument("--output", required=True, type=Path)
    p = cmd("report", "figures and tables for `snakemake --report`: quicklooks, training curve, total light")
    p.add_argument("--products", required=True, type=Path, nargs="+", help="PANDA-FINE_{year}.tif files")
    p.add_argument("--panda", required=True, type=Path, nargs="+", help="calibrated PANDA {year}.tif files")
    p.add_argument("--history", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="report directory")

    p = cmd("report-table", "one CSV table as a self-contained HTML page for `snakemake --report` (e.g. the ablation)")
    p.add_argument("--csv", required=True, type=Path, help="the table (header row first)")
    p.add_argument("--title", required=True)
    p.add_argument("--note", action="append", default=[], help="a paragraph below the table (repeatable)")
    p.add_argument("--output", required=True, type=Path, help="the HTML page")

    p = cmd("catalog", "write the STAC Collection and one Item per year beside the product COGs")
    p.add_argument("--products", required=True, type=Path, nargs="+",
                   help="product COGs, or the directory holding PANDA-FINE_{year}.tif")
    p.add_argument("--grid", type=Path, help="results/grid.json: every product must lie on this grid")
    p.add_argument("--output", required=True, type=Path, help="results/panda_fine/catalog.json")

    p = cmd("verify", "recheck products against their recorded provenance (provenance.json and COG tags); "
                      "exit status 1 on drift")
    p.set_defaults(config=None)  # optional here: default results/config.yaml beside the product directory
    p.add_argument("product_dir", type=Path, help="directory of PANDA-FINE_{year}.tif (results/panda_fine)")
    p.add_argument("--model", type=Path, help="model.onnx (default: results/models/{model.name}/model.onnx)")
    p.add_argument("--cubes", type=Path, help="directory of the {year}.zarr cubes (default: results/tiles/cube)")
    p.add_argument("--record", action="store_true",
                   help="write provenance.json for the present products instead of checking them")
    return parser


def _need(args, *names):
    for n in names:
        if getattr(args, n) is None:
            raise SystemExit(f"pandafine {args.command}: --{n.replace('_', '-')} is required for this layer")


def _grid(path: Path):
    from .grid import Grid

    return Grid.read_json(path)


def run(args: argparse.Namespace) -> int:
    c = args.command
    if c == "verify":  # before load_config: the config is optional for verify
        from .verify import run_verify

        return run_verify(args.product_dir, model=args.model, config=args.config, cubes=args.cubes,
                          record=args.record)

    from .config import load_config, years

    cfg = load_config(args.config)
    if c == "check-config":
        from .grid import grid_from_config

        grid = grid_from_config(cfg)
        print(f"{args.config}: valid. Working grid {grid.width} x {grid.height} px of {grid.pixel_size:g} m, "
              f"bounds {tuple(round(b, 2) for b in grid.bounds)}, years {cfg['run']['first_year']}-"
              f"{cfg['run']['last_year']}")
        if args.grid_out:
            grid.write_json(args.grid_out)
    elif c == "download":
        kind = cfg["sources"].get(args.layer, {"kind": "synthetic"})["kind"] if args.layer != "truth" else "synthetic"
        yrs = cfg["run"]["target_years"] if args.layer == "luojia" else years(cfg)
        if kind == "synthetic":
            from .sources.synthetic_writers import download_synthetic

            download_synthetic(cfg, args.layer, args.out, years=yrs)
        elif kind == "local":
            from .sources.local import download_local

            download_local(cfg, args.layer, args.out, yrs)
        elif kind == "http":
            from .sources.remote import download_http

            download_http(cfg, args.layer, args.out, yrs)
        elif kind == "stac":
            from .sources.stac import download_stac

            download_stac(cfg, args.layer, args.out, yrs)
        else:  # config validation refuses other kinds for now
            raise SystemExit(f"sources.{args.layer}.kind={kind!r} is not implemented")
    elif c == "calibrate":
        from . import calibrate

        if args.layer == "panda":
            calibrate.calibrate_panda(cfg, args.input, args.output)
        elif args.layer == "landsat":
            calibrate.calibrate_landsat_year(cfg, args.input, args.output)
        elif args.layer == "luojia":
            _need(args, "grid")
            calibrate.calibrate_luojia_year(cfg, args.input, _grid(args.grid), args.output)
        else:
            calibrate.calibrate_dem(cfg, args.input, args.output)
    elif c == "denoise":
        from . import denoise

        if args.layer == "luojia":
            denoise.denoise_luojia_year(cfg, args.input[0], args.output)
        else:
            _need(args, "grid")
            dirs = {int(Path(d).name): Path(d) for d in args.input}
            denoise.composite_landsat_year(cfg, args.year, dirs, _grid(args.grid), args.output)
    elif c == "mosaic":
        from .mosaic import mosaic_frames

        frames = sorted(p for p in Path(args.input).glob("*.tif"))
        if not frames:
            raise SystemExit(f"{args.input}: no denoised frame (*.tif) to mosaic")
        mosaic_frames(frames, _grid(args.grid), args.output)
    elif c == "resample":
        from .resample import resample_layer

        method = cfg["preprocess"]["panda_resampling"] if args.layer == "panda" else None
        resample_layer(args.layer, args.input, _grid(args.grid), args.output, method=method)
    elif c == "cube":
        from .tiles import build_cube

        build_cube(args.panda, args.landsat, args.dem, _grid(args.grid), args.output, year=args.year,
                   chunk=cfg["tiles"]["chunk"])
    elif c == "patches":
        from .tiles import SplitParams, build_training_set

        if len(args.cubes) != len(args.targets):
            raise SystemExit(f"--cubes ({len(args.cubes)}) and --targets ({len(args.targets)}) differ in number")
        cubes = {int(Path(p).stem): p for p in args.cubes}
        targets = {int(Path(p).stem): p for p in args.targets}
        build_training_set(cubes, targets, args.output, SplitParams.from_config(cfg))
    elif c == "train":
        from .train import train_model

        train_model(cfg, args.tiles, args.out)
    elif c == "evaluate":
        from .evaluate import evaluate_model

        evaluate_model(cfg, args.tiles, args.model_dir, args.out)
    elif c == "temporal":
        from .temporal import evaluate_temporal, files_by_year

        panda = files_by_year(args.panda, "--panda") if args.panda else None
        evaluate_temporal(files_by_year(args.products, "--products"), files_by_year(args.truths, "--truths"),
                          args.metrics, args.output, panda=panda, factor=int(cfg["grid"]["factor"]),
                          train_years=cfg["run"]["target_years"])
    elif c == "ablation":
        from .ablation import parse_rows, parse_seeds, run_ablation

        run_ablation(cfg, args.tiles, args.out, rows=parse_rows(args.rows), epochs=args.epochs,
                     seeds=parse_seeds(args.seeds))
    elif c == "design-space":
        from .design_space import run_design_space

        run_design_space(cfg, args.tiles, args.out, spec_path=args.spec, epochs=args.epochs)
    elif c == "export":
        from .export import export_onnx

        export_onnx(cfg, args.model_dir, args.tiles, args.output)
    elif c == "quantize":
        from .quantize import build_precision

        build_precision(args.model, args.precision, args.tiles, args.output)
    elif c == "precision":
        from .precision import evaluate_precisions

        evaluate_precisions(cfg, args.tiles, args.model_dir / "model.onnx", args.out, repeats=args.repeats)
    elif c == "infer":
        from .infer import infer_year

        infer_year(cfg, args.cube, args.model, args.output, year=args.year,
                   require_gpu=cfg["infer"]["require_gpu"])
    elif c == "report":
        _report(args)
    elif c == "report-table":
        from .report import csv_to_html

        csv_to_html(args.csv, args.output, title=args.title, notes=args.note)
    elif c == "catalog":
        from .catalog import build_catalog, find_products

        build_catalog(cfg, find_products(args.products), args.output,
                      grid=_grid(args.grid) if args.grid else None)
    return 0


def _report(args) -> None:
    from .report import build_report, year_map

    build_report(year_map(args.products), year_map(args.panda), args.history, args.metrics, args.out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Cap thread pools before numpy, GDAL, torch or onnxruntime are imported.
    from .runtime import limit_threads

    limit_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    logging.basicConfig(level=logging.INFO, format=f"pandafine {args.command}: %(message)s")
    from .config import ConfigError
    from .sources.http import DownloadError

    try:
        rc = run(args)
    except (ConfigError, ValueError, FileNotFoundError, DownloadError) as exc:
        print(f"pandafine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return rc or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
