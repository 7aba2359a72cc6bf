rule download:
    output:
        "resources/raw/{layer}/manifest.json",
    log:
        "logs/download/{layer}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("download") + " --layer {wildcards.layer} --out resources/raw/{wildcards.layer} &> {log}"


rule download_truth:
    output:
        "resources/synthetic/manifest.json",
    log:
        "logs/download/truth.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("download") + " --layer truth --out resources/synthetic &> {log}"


rule grid:
    output:
        "results/grid.json",
    log:
        "logs/grid.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("check-config") + " --grid-out {output} &> {log}"
