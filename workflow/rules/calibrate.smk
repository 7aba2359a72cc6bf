rule calibrate_panda:
    input:
        "resources/raw/panda/manifest.json",
    output:
        "results/calibrated/panda/{year}.tif",
    params:
        config=rule_config_digest(config, "calibrate_panda"),
        raw=lambda wc: f"resources/raw/panda/{panda_name(wc.year)}",
    log:
        "logs/calibrate/panda_{year}.log",
    priority: training_input_priority
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("calibrate") + " --layer panda --year {wildcards.year} --input {params.raw} --output {output} &> {log}"


rule calibrate_luojia:
    input:
        manifest="resources/raw/luojia/manifest.json",
        grid="results/grid.json",
    output:
        directory("results/calibrated/luojia/{year}"),
    params:
        config=rule_config_digest(config, "calibrate_luojia"),
    log:
        "logs/calibrate/luojia_{year}.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("calibrate") + " --layer luojia --year {wildcards.year} --input resources/raw/luojia/{wildcards.year} --grid {input.grid} --output {output} &> {log}"


rule calibrate_dem:
    input:
        "resources/raw/dem/manifest.json",
    output:
        "results/calibrated/dem/dem.tif",
    params:
        config=rule_config_digest(config, "calibrate_dem"),
    log:
        "logs/calibrate/dem.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(3000),
        runtime=streaming_runtime("calibrate_dem"),
    conda:
        CONDA_ENV
    shell:
        pf("calibrate") + " --layer dem --input resources/raw/dem --output {output} &> {log}"
