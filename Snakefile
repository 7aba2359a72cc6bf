# PANDA-FINE workflow: thin wiring of files to `pandafine` subcommands.
# All logic lives in src/pandafine/; see README.md, docs/architecture.md and docs/contracts.md.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# The package's own checks first: their messages name the key, the value and what is allowed.
from pandafine.config import ConfigError, validate_config

try:
    validate_config(config, source="config")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, "workflow/schemas/config.schema.json")


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/landsat.smk"
include: "workflow/rules/denoise.smk"
include: "workflow/rules/mosaic.smk"
include: "workflow/rules/resample.smk"
include: "workflow/rules/tile.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/temporal.smk"


rule all:
    input:
        expand("results/panda_fine/PANDA-FINE_{year}.tif", year=YEARS),
        f"results/models/{MODEL}/metrics.json",
        "results/panda_fine/provenance.json",
        "results/report/quicklooks.png",
        "results/panda_fine/catalog.json",
        "results/report/ablation.html" if ABLATION_ENABLED else [],
        "results/design_space/design_space.csv" if DESIGN_SPACE_ENABLED else [],
        f"results/models/{MODEL}/temporal.json" if SYNTHETIC and TEMPORAL_YEARS else [],
        "results/report/fidelity.png" if SYNTHETIC and TARGET_YEARS else [],
    default_target: True
