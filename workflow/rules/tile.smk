rule cube:
    input:
        panda="results/resampled/panda/{year}.tif",
        landsat="results/denoised/landsat/{year}.tif",  # made on the working grid: no resample
        dem="results/resampled/dem/dem.tif",
        grid="results/grid.json",
    output:
        directory("results/tiles/cube/{year}.zarr"),
    params:
        config=rule_config_digest(config, "cube"),
    log:
        "logs/tile/cube_{year}.log",
    priority: training_input_priority
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=streaming_runtime("cube"),
    conda:
        CONDA_ENV
    shell:
        pf("cube") + " --year {wildcards.year} --panda {input.panda} --landsat {input.landsat} --dem {input.dem} --grid {input.grid} --output {output} &> {log}"


rule patches:
    input:
        cubes=expand("results/tiles/cube/{year}.zarr", year=TARGET_YEARS),
        targets=expand("results/target/{year}.tif", year=TARGET_YEARS),
    output:
        directory("results/tiles/train.zarr"),
    params:
        config=rule_config_digest(config, "patches"),
    log:
        "logs/tile/patches.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("patches") + " --cubes {input.cubes} --targets {input.targets} --output {output} &> {log}"
