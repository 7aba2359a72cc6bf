# Temporal generalization (synthetic scene only): products of evaluate.temporal_years against the
# scene's hidden truth. In `rule all` when the sources are synthetic and temporal_years is not empty.


rule temporal:
    input:
        products=expand("results/panda_fine/PANDA-FINE_{year}.tif", year=TEMPORAL_YEARS),
        panda=expand("results/resampled/panda/{year}.tif", year=TEMPORAL_YEARS),
        truth="resources/synthetic/manifest.json",
        metrics=f"results/models/{MODEL}/metrics.json",
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
        pf("temporal") + " --products {input.products} --panda {input.panda} --truths {params.truths} --metrics {input.metrics} --output {output} &> {log}"
