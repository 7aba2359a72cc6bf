# Shared definitions: every config-derived global (so the order of the includes does not matter), the
# effective config file handed to every job, the CLI prefix, and helpers for the rules' resources.

import os
import sys
from pathlib import Path

from pandafine.config import config_hash, infer_precision, level_max_blocks, years as config_years
from pandafine.models import model_filename
from pandafine.config_keys import rule_config_digest
from pandafine.core.blocks import infer_job_resources, landsat_block_resources, landsat_block_size, streaming_job_minutes
from pandafine.core.channels import CHANNELS
from pandafine.core.grid import grid_from_config
from pandafine.core.region import plan_blocks
from pandafine.core.scheduling import model_job_threads, training_input_years
from snakemake.exceptions import WorkflowError

YEARS = config_years(config)
TARGET_YEARS = list(config["run"]["target_years"])
MODEL = config["model"]["name"]
GAPFILL = config["preprocess"]["landsat_gapfill_years"]
SYNTHETIC = all(src["kind"] == "synthetic" for src in config["sources"].values())
# evaluate.temporal_years: products checked against the synthetic scene's hidden truth (temporal.smk).
TEMPORAL_YEARS = [y for y in config.get("evaluate", {}).get("temporal_years", []) if y in YEARS]

# infer.precision: the infer rule runs model.onnx (fp32) or the fp16/int8 model made from it.
PRECISION = infer_precision(config)
# Generative models (diffusion, flow) are sampled from their checkpoint in PyTorch (no ONNX export).
GENERATIVE = MODEL in ("diffusion", "flow")
# The uncertainty study (the `uncertainty` job of model.smk): the config's `uncertainty` section; its residual
# generative companion of the model is what an ensemble product of a deterministic model samples.
UNCERTAINTY = config.get("uncertainty") or {}
UNCERTAINTY_HOLDOUT = UNCERTAINTY.get("holdout_tiles") or []
COMPANION = f"results/models/{MODEL}/uncertainty_models/generative/checkpoint.pt"
ENSEMBLE_COMPANION = not GENERATIVE and int(config["infer"].get("ensemble", 1)) > 1
MODEL_ONNX = (f"results/models/{MODEL}/checkpoint.pt" if GENERATIVE else COMPANION if ENSEMBLE_COMPANION else
              f"results/models/{MODEL}/{model_filename(PRECISION)}")
# The level scale every product is multiplied by (rule level, model.smk; infer.level).
LEVEL_JSON = f"results/models/{MODEL}/level.json"

# Spatial blocks (grid.block > 0): inference runs one job per block and year, each reading its halo from
# the year's cube, and `assemble` joins the blocks into the year's product (infer.smk). Only the blocks
# touching region.mask (if given) are planned; their list is written to BLOCK_LIST (rewritten only when the
# plan changes) and the DAG is built from it.
BLOCK_SIZE = int(config["grid"].get("block", 0))
BLOCK_LIST = "results/blocks/blocks.csv"
GRID = grid_from_config(config)
BLOCKS = [b.name for b in plan_blocks(config, GRID, BLOCK_LIST)] if BLOCK_SIZE else []
# Blocks per target year the `level` job infers (infer.level_max_blocks, pandafine.inference.level): its runtime.
LEVEL_BLOCKS = min(max(1, len(BLOCKS)), level_max_blocks(config))
# An inference job's memory and runtime follow the area it infers: a block, or the whole grid.
INFER_MEM_MB, INFER_MINUTES = infer_job_resources(
    min(BLOCK_SIZE or GRID.height, GRID.height), min(BLOCK_SIZE or GRID.width, GRID.width),
    int(config["infer"]["tile"]), len(CHANNELS))
# Landsat is read per (year, block) (landsat.smk), in blocks of preprocess.landsat_block px (their own lattice:
# grid.block, how inference is cut, does not rerun Landsat); only those touching region.mask are planned.
LANDSAT_BLOCK_SIZE = landsat_block_size(config)
LANDSAT_BLOCKS = [b.name for b in plan_blocks(config, GRID, "results/landsat/blocks.csv", LANDSAT_BLOCK_SIZE)]
LANDSAT_BLOCK_MEM_MB, LANDSAT_BLOCK_MINUTES = landsat_block_resources(
    min(LANDSAT_BLOCK_SIZE, GRID.height), min(LANDSAT_BLOCK_SIZE, GRID.width), GRID.pixel_size,
    config["sources"]["landsat"].get("max_scenes"), bool(config["preprocess"].get("landsat_overviews", False)))
# region.mask is an input of inference (a changed outline reruns it); [] when there is none.
REGION_MASK = config["region"].get("mask") or []

# The ablation (model.smk): `ablation.epochs`/`ablation.rows`/`ablation.seeds` become --epochs/--rows/--seeds.
ABLATION = config.get("ablation", {})
ABLATION_ENABLED = bool(ABLATION.get("enabled", False))
ABLATION_ARGS = " ".join(
    ([f"--epochs {ABLATION['epochs']}"] if "epochs" in ABLATION else [])
    + ([f"--rows {','.join(str(r) for r in sorted(ABLATION['rows']))}"] if "rows" in ABLATION else [])
    + ([f"--seeds {','.join(str(s) for s in ABLATION['seeds'])}"] if "seeds" in ABLATION else [])
)

# The design-space table (model.smk).
DESIGN_SPACE = config.get("design_space", {})
DESIGN_SPACE_ENABLED = bool(DESIGN_SPACE.get("enabled", False))

# Every job reads the effective config (config.yaml plus any --configfile/--config) from a file named by
# its content hash, written once and never overwritten: a second Snakemake process with another config
# (even `-n`) writes another file and cannot change what this run's jobs read. Jobs find it in
# $PANDAFINE_CONFIG (set by the shell prefix below), so the rules' command text does not change with the
# config; what each rule depends on is its `config` param (pandafine.config_keys), and a changed param
# reruns the rule.
EFFECTIVE_CONFIG = f"results/config/{config_hash(config)[:16]}.yaml"


def _write_effective_config():
    import yaml
    from pandafine.core.atomic import write_text_atomic

    path = Path(EFFECTIVE_CONFIG)
    if not path.exists():
        write_text_atomic(path, yaml.safe_dump(dict(config), sort_keys=False))


_write_effective_config()

# This checkout, for envs/pandafine.yaml (`-e ${PANDAFINE_REPO}`): conda runs pip from the copy of the
# env file under .snakemake/conda/, so the env file cannot name the checkout by a relative path.
# (Set here, not read: the envvars directive, which snakemake --lint asks for when a workflow reads
# os.environ[...], is for variables the user must provide.)
os.environ.update(PANDAFINE_REPO=str(Path(workflow.basedir).resolve()))

# The pandafine executable of the environment running Snakemake, appended to PATH so that a
# per-rule conda environment (--software-deployment-method conda) still takes precedence.
shell.prefix(
    f'export PATH="$PATH:{Path(sys.executable).parent}"; export PANDAFINE_CONFIG={EFFECTIVE_CONFIG}; '
    "set -euo pipefail; "
)


#: The conda environment of every rule (with --software-deployment-method conda), relative to the rule files.
CONDA_ENV = "../../envs/pandafine.yaml"


def per_attempt(base):
    """A resource that grows with Snakemake's retry attempt: ``base`` on the first try, ``2 * base`` on the
    second, ... (with ``--retries``, a job killed for memory or time asks for more)."""
    return lambda wc, attempt: base * attempt


def streaming_runtime(stage):
    """Runtime of a per-year job that streams the whole grid: its measured cost per megapixel times the
    grid's (pandafine.core.blocks.streaming_job_minutes), times the retry attempt."""
    return per_attempt(streaming_job_minutes(stage, GRID))


def model_threads(most):
    """Threads of a job that runs a model on CPUs, from pandafine.core.scheduling.model_job_threads (at
    most half of the cores in a local run, what the rule declares under a cluster executor and in its
    jobs)."""
    local = workflow.local_exec and workflow.is_main_process
    try:
        cores = workflow.cores
    except WorkflowError:  # no --cores given
        cores = None
    return model_job_threads(most, cores, os.cpu_count(), local=local)


# The years whose inputs the training needs: the target years, with the Landsat gap-fill years around
# them. Their per-year jobs, the downloads, the grid, the DEM, the Luojia-01 targets, the patches and
# the training go first (rule `priority`), so that training starts early and the other years' jobs
# and the ablation run beside it: on 2 cores no core then waits for the training at the end
# (docs/results/2026-12-07-demo-time.md). Priorities order jobs that are ready at the same time; they
# change nothing in what is computed.
TRAINING_INPUT_YEARS = training_input_years(TARGET_YEARS, GAPFILL)


def training_input_priority(wildcards):
    """Priority of a per-year job: 1 for :data:`TRAINING_INPUT_YEARS`, else 0."""
    return 1 if int(wildcards.year) in TRAINING_INPUT_YEARS else 0


def pf(stage):
    """Command prefix of a stage: config and thread budget come from the rule."""
    return f'pandafine {stage} --config "$PANDAFINE_CONFIG" --threads {{threads}}'


def panda_name(year):
    """File name of a PANDA year under resources/raw/panda/."""
    return config["sources"]["panda"].get("pattern", "PANDA_China_{year}.tif").format(year=year)


def gapfill_years(year):
    """Years whose calibrated Landsat a composite of `year` may draw on."""
    y = int(year)
    return [v for v in range(y - GAPFILL, y + GAPFILL + 1) if v in YEARS]


wildcard_constraints:
    year=r"\d{4}",
    block=r"r\d\d\d+c\d\d\d+",
    layer="panda|landsat|dem|luojia",
