if BLOCK_SIZE:

    rule infer:
        input:
            cube="results/tiles/cube/{year}.zarr",
            model=MODEL_ONNX,  # infer.precision (model.smk)
            level=LEVEL_JSON,
            mask=REGION_MASK,
        output:
            "results/blocks/{year}/{block}.tif",
        params:
            config=rule_config_digest(config, "infer"),
        log:
            "logs/infer/{year}_{block}.log",
        threads: model_threads(2)
        resources:
            mem_mb=per_attempt(INFER_MEM_MB),  # by the block's (or grid's) size (common.smk)
            runtime=per_attempt(INFER_MINUTES),
        conda:
            CONDA_ENV
        shell:
            pf("infer") + " --year {wildcards.year} --block {wildcards.block} --cube {input.cube} --model {input.model} --level {input.level} --output {output} &> {log}"

    rule assemble:
        input:
            blocks=expand("results/blocks/{{year}}/{block}.tif", block=BLOCKS),
            grid="results/grid.json",
        output:
            "results/panda_fine/PANDA-FINE_{year}.tif",
        params:
            config=rule_config_digest(config, "assemble"),
        log:
            "logs/assemble/{year}.log",
        threads: 1
        resources:
            mem_mb=per_attempt(2000),
            runtime=per_attempt(60),
        conda:
            CONDA_ENV
        shell:
            pf("assemble") + " --blocks {input.blocks} --grid {input.grid} --output {output} &> {log}"

else:

    rule infer:
        input:
            cube="results/tiles/cube/{year}.zarr",
            model=MODEL_ONNX,  # infer.precision (model.smk)
            level=LEVEL_JSON,
            mask=REGION_MASK,
        output:
            "results/panda_fine/PANDA-FINE_{year}.tif",
        params:
            config=rule_config_digest(config, "infer"),
        log:
            "logs/infer/{year}.log",
        threads: model_threads(2)
        resources:
            mem_mb=per_attempt(INFER_MEM_MB),  # by the block's (or grid's) size (common.smk)
            runtime=per_attempt(INFER_MINUTES),
        conda:
            CONDA_ENV
        shell:
            pf("infer") + " --year {wildcards.year} --cube {input.cube} --model {input.model} --level {input.level} --output {output} &> {log}"


rule catalog:
    input:
        products=expand("results/panda_fine/PANDA-FINE_{year}.tif", year=YEARS),
        grid="results/grid.json",
    output:
        catalog="results/panda_fine/catalog.json",
        item_files=expand("results/panda_fine/items/PANDA-FINE_{year}.json", year=YEARS),
    params:
        config=rule_config_digest(config, "catalog"),
    log:
        "logs/catalog.log",
    threads: 1
    resources:
        mem_mb=per_attempt(1000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("catalog") + " --products {input.products} --grid {input.grid} --output {output.catalog} &> {log}"


rule provenance:
    input:
        products=expand("results/panda_fine/PANDA-FINE_{year}.tif", year=YEARS),
        model=MODEL_ONNX,
        cubes=expand("results/tiles/cube/{year}.zarr", year=YEARS),
    output:
        "results/panda_fine/provenance.json",
    params:
        config=rule_config_digest(config, "provenance"),
    log:
        "logs/provenance.log",
    threads: 1
    resources:
        mem_mb=per_attempt(1000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("verify") + " --record --model {input.model} --cubes results/tiles/cube results/panda_fine &> {log}"
