rule download:
    output:
        "resources/raw/{layer}/manifest.json",
    log:
        "logs/download/{layer}.log",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
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
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
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
        mem_mb=lambda wc, attempt: 500 * attempt,
        runtime=lambda wc, attempt: 5 * attempt,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("check-config") + " --grid-out {output} &> {log}"
