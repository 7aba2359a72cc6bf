rule denoise_luojia:
    input:
        "results/calibrated/luojia/{year}",
    output:
        directory("results/denoised/luojia/{year}"),
    params:
        config=rule_config_digest(config, "denoise_luojia"),
    log:
        "logs/denoise/luojia_{year}.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(3000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("denoise") + " --layer luojia --year {wildcards.year} --input {input} --output {output} &> {log}"
