# Temporal generalization (synthetic scene only): products of evaluate.temporal_years against the
# scene's hidden truth. In `rule all` when the sources are synthetic and temporal_years is not empty.


rule temporal:
    input:
        products=expand("results/panda_fine/PANDA-FINE_{year}.tif", year=TEMPORAL_YEARS),
        panda=expand("results/resampled/panda/{year}.tif", year=TEMPORAL_YEARS),
        truth="resources/synthetic/manifest.json",
        metrics=f"results/models/{MODEL}/metrics.json",
        fidelity=f"results/models/{MODEL}/fidelity.json",
    output:
        report(f"results/models/{MODEL}/temporal.json", category="Evaluation"),
    params:
        config=rule_config_digest(config, "temporal"),
        truths=expand("resources/synthetic/truth/radiance_{year}.tif", year=TEMPORAL_YEARS),
    log:
        f"logs/evaluate/{MODEL}_temporal.log",
    threads: 1
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("temporal") + " --products {input.products} --panda {input.panda} --truths {params.truths} --metrics {input.metrics} --fidelity {input.fidelity} --output {output} &> {log}"


# Radiometric fidelity (synthetic scene only): every year's product against the hidden truth as Luojia-01
# would have measured it (pandafine.studies.fidelity), its scale taken from the target years' mosaics.
rule fidelity:
    input:
        products=expand("results/panda_fine/PANDA-FINE_{year}.tif", year=YEARS),
        panda=expand("results/resampled/panda/{year}.tif", year=YEARS),
        targets=expand("results/target/{year}.tif", year=TARGET_YEARS),
        truth="resources/synthetic/manifest.json",
        metrics=f"results/models/{MODEL}/metrics.json",
    output:
        report(f"results/models/{MODEL}/fidelity.json", category="Evaluation"),
    params:
        config=rule_config_digest(config, "fidelity"),
        truths=expand("resources/synthetic/truth/radiance_{year}.tif", year=YEARS),
    log:
        f"logs/evaluate/{MODEL}_fidelity.log",
    threads: 1
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("fidelity") + " --products {input.products} --panda {input.panda} --targets {input.targets} --truths {params.truths} --metrics {input.metrics} --output {output} &> {log}"


rule report_fidelity:
    input:
        f"results/models/{MODEL}/fidelity.json",
    output:
        report("results/report/fidelity.png", caption="../report/fidelity.rst", category="Product"),
    params:
        config=rule_config_digest(config, "report_fidelity"),
    log:
        "logs/report_fidelity.log",
    threads: 1
    resources:
        mem_mb=per_attempt(1000),
        runtime=per_attempt(10),
    conda:
        CONDA_ENV
    shell:
        pf("report-fidelity") + " --fidelity {input} --output {output} &> {log}"
