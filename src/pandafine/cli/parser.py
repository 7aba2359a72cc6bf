"""The ``pandafine`` argument parser: one subcommand per workflow stage.

Argument parsing only (standard library): nothing here imports numpy, GDAL or
torch, so :func:`pandafine.cli.main` can set the thread budget before they load.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pandafine import __version__

LAYERS = ("panda", "landsat", "dem", "luojia")

DESCRIPTION = "The ``pandafine`` command line: one subcommand per workflow stage."

#: The function that runs each subcommand, as ``module:function`` in :mod:`pandafine.cli`. The CLI imports
#: the module only after it has set the thread budget (numpy, GDAL and torch read it when they load), and
#: only the module of the subcommand run, so a stage loads just the libraries it uses.
HANDLERS = {
    "check-config": "prepare:check_config",
    "download": "prepare:download",
    "calibrate": "prepare:calibrate",
    "landsat-block": "prepare:landsat_block",
    "denoise": "prepare:denoise",
    "mosaic": "prepare:mosaic",
    "resample": "prepare:resample",
    "cube": "prepare:cube",
    "patches": "prepare:patches",
    "train": "model:train",
    "evaluate": "model:evaluate",
    "export": "model:export",
    "quantize": "model:quantize",
    "level": "inference:level",
    "infer": "inference:infer",
    "assemble": "product:assemble",
    "temporal": "studies:temporal",
    "fidelity": "studies:fidelity",
    "ablation": "studies:ablation",
    "design-space": "studies:design_space",
    "precision": "studies:precision",
    "uncertainty": "studies:uncertainty",
    "report": "product:report",
    "report-table": "product:report_table",
    "report-fidelity": "product:report_fidelity",
    "catalog": "product:catalog",
    "verify": "product:verify",
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config.yaml", type=Path, help="workflow config (YAML); default: %(default)s")
    p.add_argument("--threads", default=1, type=int,
                   help="threads this job may use (capped at the CPU count); default: %(default)s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pandafine", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pandafine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    def cmd(name, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        _add_common(p)
        p.set_defaults(handler=HANDLERS[name])
        return p

    p = cmd("check-config", "validate a config file and print the working grid it defines")
    p.add_argument("--grid-out", type=Path, help="also write the grid as JSON here")

    p = cmd("download", "fetch (or synthesize) one layer's raw files into resources/raw/{layer}/ with a manifest")
    p.add_argument("--layer", required=True, choices=LAYERS + ("truth",))
    p.add_argument("--out", required=True, type=Path, help="layer directory to fill")

    p = cmd("calibrate", "calibrate one layer (and year): DN to physical units, masks, inter-calibration (Landsat is "
                         "calibrated where it is read, by landsat-block)")
    p.add_argument("--layer", required=True, choices=("panda", "luojia", "dem"))
    p.add_argument("--year", type=int, help="year (all layers but dem)")
    p.add_argument("--input", required=True, type=Path, help="raw file (panda) or directory (luojia, dem)")
    p.add_argument("--grid", type=Path, help="results/grid.json (luojia)")
    p.add_argument("--output", required=True, type=Path, help="output file (panda, dem) or directory")

    p = cmd("landsat-block", "Landsat of one (year, block) straight to its composite on the working grid: find "
                             "the scenes over the block, read them under it, mask, calibrate, warp, take the median "
                             "(resumes from the scenes a killed run finished)")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--block", required=True, help="block name r{row}c{col} of the preprocess.landsat_block lattice")
    p.add_argument("--grid", required=True, type=Path, help="results/grid.json")
    p.add_argument("--raw", type=Path, help="directory of the synthetic scenes (sources.landsat.kind: synthetic)")
    p.add_argument("--output", required=True, type=Path,
                   help="block composite {block}.tif; the scenes used go to {block}.json beside it")

    p = cmd("denoise", "denoise Luojia frames of a year, or join a year's Landsat block composites on the working "
                       "grid and fill their gaps from neighbouring years")
    p.add_argument("--layer", required=True, choices=("luojia", "landsat"))
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--input", required=True, type=Path, nargs="+",
                   help="luojia: the calibrated year directory; landsat: block composites {year}/{block}.tif of "
                        "this year and its neighbours (for gap filling)")
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

    p = cmd("uncertainty", "per-pixel uncertainty of the model: trains (or reuses) a heteroscedastic head and a "
                           "residual generative model on it, scores them and a constant spread (CRPS, spread-skill, "
                           "coverage) on the test split and a held-out scene; write uncertainty.json")
    p.add_argument("--tiles", required=True, type=Path, help="results/tiles/train.zarr")
    p.add_argument("--model-dir", required=True, type=Path, help="model directory with checkpoint.pt (the base)")
    p.add_argument("--out", required=True, type=Path, help="directory for uncertainty.json (beside metrics.json)")
    p.add_argument("--holdout", type=Path, help="train.zarr of a held-out scene: all its patches are scored too")
    p.add_argument("--members", type=int, help="ensemble size (default: uncertainty.members, else 16)")
    p.add_argument("--epochs", type=int, help="train.epochs of the companion models (default: uncertainty.epochs, "
                                              "else train.epochs)")

    p = cmd("temporal", "temporal generalization: yearly products (and the baseline) against the synthetic truth")
    p.add_argument("--products", required=True, type=Path, nargs="+", help="PANDA-FINE_{year}.tif files")
    p.add_argument("--truths", required=True, type=Path, nargs="+", help="truth/radiance_{year}.tif files")
    p.add_argument("--panda", type=Path, nargs="+", help="resampled PANDA {year}.tif files (for the baseline)")
    p.add_argument("--metrics", required=True, type=Path, help="the model's metrics.json (baseline coefficients)")
    p.add_argument("--fidelity", type=Path,
                   help="fidelity.json: each year's product / Luojia-01-scale reference total light is copied in")
    p.add_argument("--output", required=True, type=Path, help="temporal.json")

    p = cmd("fidelity", "total light of every year's product against the Luojia-01-scale reference (synthetic)")
    p.add_argument("--products", required=True, type=Path, nargs="+", help="PANDA-FINE_{year}.tif files")
    p.add_argument("--truths", required=True, type=Path, nargs="+", help="truth/radiance_{year}.tif files")
    p.add_argument("--targets", required=True, type=Path, nargs="+",
                   help="the target years' mosaics results/target/{year}.tif (they set the reference's scale)")
    p.add_argument("--panda", type=Path, nargs="+", help="resampled PANDA {year}.tif files (for the baseline)")
    p.add_argument("--metrics", type=Path, help="the model's metrics.json (the baseline's coefficients)")
    p.add_argument("--output", required=True, type=Path, help="fidelity.json")

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
                                             "pandafine.studies.design_space.DEFAULT_SPEC)")
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

    p = cmd("level", "measure the level scale that gives the products the target years' total light (level.json)")
    p.add_argument("--model", required=True, type=Path, help="the model infer runs (model.onnx, a variant, or checkpoint.pt)")
    p.add_argument("--tiles", required=True, type=Path, help="results/tiles/train.zarr (patch positions and splits)")
    p.add_argument("--cubes", required=True, type=Path, nargs="+", help="the target years' cubes")
    p.add_argument("--targets", required=True, type=Path, nargs="+", help="the target years' targets, in the same order")
    p.add_argument("--output", required=True, type=Path, help="level.json")
    p = cmd("infer", "tiled, blended inference of one year into a Cloud-Optimized GeoTIFF")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--cube", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path,
                   help="model.onnx (or its fp16/int8 variant); for diffusion/flow models their checkpoint.pt, "
                        "sampled tile by tile in PyTorch (infer.ensemble > 1: a second band with the spread)")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--block", help="one spatial block r{row:03d}c{col:03d} of the grid (grid.block): the output is "
                                   "that block's GeoTIFF, for `pandafine assemble`")
    p.add_argument("--level", type=Path, help="level.json of `pandafine level`: the radiance is multiplied by its scale")
    p = cmd("assemble", "join the block GeoTIFFs of one year (`pandafine infer --block`) into the product COG")
    p.add_argument("--blocks", required=True, type=Path, nargs="+", help="the year's block GeoTIFFs")
    p.add_argument("--grid", required=True, type=Path, help="results/grid.json")
    p.add_argument("--output", required=True, type=Path)
    p = cmd("report", "figures and tables for `snakemake --report`: quicklooks, training curve, total light")
    p.add_argument("--products", required=True, type=Path, nargs="+", help="PANDA-FINE_{year}.tif files")
    p.add_argument("--panda", required=True, type=Path, nargs="+", help="calibrated PANDA {year}.tif files")
    p.add_argument("--landsat", type=Path, nargs="+",
                   help="yearly Landsat composites {year}.tif (their coverage goes to landsat_coverage.csv)")
    p.add_argument("--landsat-blocks", type=Path, nargs="+",
                   help="Landsat block records {year}/{block}.json (to landsat_block_coverage.csv and "
                        "landsat_coverage.png)")
    p.add_argument("--history", required=True, type=Path)
    p.add_argument("--metrics", required=True, type=Path)
    p.add_argument("--level", type=Path, help="level.json (`pandafine level`): its scale and in-context test figures "
                                              "become a note under the metrics table")
    p.add_argument("--out", required=True, type=Path, help="report directory")

    p = cmd("report-fidelity", "figure of fidelity.json: yearly total light of product, reference and PANDA by "
                               "sensor era")
    p.add_argument("--fidelity", required=True, type=Path, help="fidelity.json (`pandafine fidelity`)")
    p.add_argument("--output", required=True, type=Path, help="the figure (PNG)")

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
    p.set_defaults(config=None, needs_config=False)  # optional: default the config provenance.json records
    p.add_argument("product_dir", type=Path, help="directory of PANDA-FINE_{year}.tif (results/panda_fine)")
    p.add_argument("--model", type=Path, help="model.onnx (default: results/models/{model.name}/model.onnx)")
    p.add_argument("--cubes", type=Path, help="directory of the {year}.zarr cubes (default: results/tiles/cube)")
    p.add_argument("--record", action="store_true",
                   help="write provenance.json for the present products instead of checking them")
    return parser
