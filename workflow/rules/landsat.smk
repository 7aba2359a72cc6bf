# Landsat per (year, block): `landsat-block` finds the scenes over the block (STAC search by the block's
# footprint, or the local/synthetic scene directories), reads them under the block only and writes the
# block's composite on the working grid, resuming from its journal after a kill
# (src/pandafine/preprocess/landsat_composite.py). `composite_landsat` joins a year's block composites and
# fills their gaps from the neighbouring years' block composites.

LANDSAT_SYNTHETIC = config["sources"]["landsat"]["kind"] == "synthetic"


rule landsat_block:
    input:
        grid="results/grid.json",
        raw=["resources/raw/landsat/manifest.json"] if LANDSAT_SYNTHETIC else [],
    output:
        composite="results/landsat/{year}/{block}.tif",
        record="results/landsat/{year}/{block}.json",
    params:
        config=rule_config_digest(config, "landsat_block"),
        raw="--raw resources/raw/landsat" if LANDSAT_SYNTHETIC else "",
    log:
        "logs/landsat/{year}_{block}.log",
    priority: training_input_priority
    threads: 1
    resources:
        mem_mb=per_attempt(LANDSAT_BLOCK_MEM_MB),
        runtime=per_attempt(LANDSAT_BLOCK_MINUTES),
    conda:
        CONDA_ENV
    shell:
        pf("landsat-block") + " --year {wildcards.year} --block {wildcards.block} --grid {input.grid} {params.raw} --output {output.composite} &> {log}"


rule composite_landsat:
    input:
        blocks=lambda wc: expand("results/landsat/{y}/{b}.tif", y=gapfill_years(wc.year), b=LANDSAT_BLOCKS),
        grid="results/grid.json",
        # not region.mask: it only decides where the coverage is counted (the job reads it from the config);
        # as an input, a new outline would rerun the composites, the cubes and the training for no changed pixel
    output:
        "results/denoised/landsat/{year}.tif",
    params:
        config=rule_config_digest(config, "composite_landsat"),
    log:
        "logs/denoise/landsat_{year}.log",
    priority: training_input_priority
    threads: 1
    resources:
        mem_mb=per_attempt(3000),
        runtime=streaming_runtime("composite_landsat"),
    conda:
        CONDA_ENV
    shell:
        pf("denoise") + " --layer landsat --year {wildcards.year} --input {input.blocks} --grid {input.grid} --output {output} &> {log}"
