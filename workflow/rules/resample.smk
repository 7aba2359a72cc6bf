rule resample_panda:
    input:
        data="results/calibrated/panda/{year}.tif",
        grid="results/grid.json",
    output:
        "results/resampled/panda/{year}.tif",
    params:
        config=rule_config_digest(config, "resample_panda"),
    log:
        "logs/resample/panda_{year}.log",
    priority: training_input_priority
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=streaming_runtime("resample_panda"),
    conda:
        CONDA_ENV
    shell:
        pf("resample") + " --layer panda --input {input.data} --grid {input.grid} --output {output} &> {log}"


rule resample_dem:
    input:
        data="results/calibrated/dem/dem.tif",
        grid="results/grid.json",
    output:
        "results/resampled/dem/dem.tif",
    params:
        config=rule_config_digest(config, "resample_dem"),
    log:
        "logs/resample/dem.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=streaming_runtime("resample_dem"),
    conda:
        CONDA_ENV
    shell:
        pf("resample") + " --layer dem --input {input.data} --grid {input.grid} --output {output} &> {log}"
