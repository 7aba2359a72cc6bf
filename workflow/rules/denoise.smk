rule denoise_luojia:
    input:
        "results/calibrated/luojia/{year}",
    output:
        directory("results/denoised/luojia/{year}"),
    params:
        config=rule_config_digest(config, "denoise_luojia"),
    log:
        "logs/denoise/luojia_{year}.log",
    threads: 1
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("denoise") + " --layer luojia --year {wildcards.year} --input {input} --output {output} &> {log}"


rule composite_landsat:
    input:
        scenes=lambda wc: expand("results/calibrated/landsat/{y}", y=gapfill_years(wc.year)),
        grid="results/grid.json",
    output:
        "results/denoised/landsat/{year}.tif",
    params:
        config=rule_config_digest(config, "composite_landsat"),
    log:
        "logs/denoise/landsat_{year}.log",
    threads: 1
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("denoise") + " --layer landsat --year {wildcards.year} --input {input.scenes} --grid {input.grid} --output {output} &> {log}"
