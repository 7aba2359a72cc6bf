rule download:
    output:
        "resources/raw/{layer}/manifest.json",
    params:
        config=lambda wc: rule_config_digest(config, "download", wc.layer),
    log:
        "logs/download/{layer}.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(120),
    conda:
        CONDA_ENV
    shell:
        pf("download") + " --layer {wildcards.layer} --out resources/raw/{wildcards.layer} &> {log}"


rule download_truth:
    output:
        "resources/synthetic/manifest.json",
    params:
        config=rule_config_digest(config, "download", "truth"),
    log:
        "logs/download/truth.log",
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("download") + " --layer truth --out resources/synthetic &> {log}"


rule grid:
    output:
        "results/grid.json",
    params:
        config=rule_config_digest(config, "grid"),
    log:
        "logs/grid.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(500),
        runtime=per_attempt(5),
    conda:
        CONDA_ENV
    shell:
        pf("check-config") + " --grid-out {output} &> {log}"
