rule report_figures:
    input:
        products=expand("results/panda_fine/PANDA-FINE_{year}.tif", year=YEARS),
        panda=expand("results/calibrated/panda/{year}.tif", year=YEARS),
        landsat=expand("results/denoised/landsat/{year}.tif", year=YEARS),
        landsat_blocks=expand("results/landsat/{year}/{block}.json", year=YEARS, block=LANDSAT_BLOCKS),
        history=f"results/models/{MODEL}/history.csv",
        metrics=f"results/models/{MODEL}/metrics.json",
        level=LEVEL_JSON,
    output:
        quicklooks=report("results/report/quicklooks.png", caption="../report/quicklooks.rst", category="Product"),
        curve=report("results/report/training_curve.png", caption="../report/training_curve.rst", category="Model"),
        total=report("results/report/total_light.png", caption="../report/total_light.rst", category="Product"),
        total_csv=report("results/report/total_light.csv", caption="../report/total_light.rst", category="Product"),
        metrics=report("results/report/metrics.csv", caption="../report/metrics.rst", category="Model"),
        metrics_html=report("results/report/metrics.html", caption="../report/metrics.rst", category="Model"),
        landsat=report("results/report/landsat_coverage.csv", caption="../report/landsat_coverage.rst", category="Inputs"),
        landsat_blocks=report("results/report/landsat_block_coverage.csv", caption="../report/landsat_block_coverage.rst", category="Inputs"),
        landsat_figure=report("results/report/landsat_coverage.png", caption="../report/landsat_block_coverage.rst", category="Inputs"),
    params:
        config=rule_config_digest(config, "report_figures"),
    log:
        "logs/report.log",
    threads: 1
    resources:
        mem_mb=per_attempt(2000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("report") + " --products {input.products} --panda {input.panda} --landsat {input.landsat} --landsat-blocks {input.landsat_blocks} --history {input.history} --metrics {input.metrics} --level {input.level} --out results/report &> {log}"


# The ablation table as a page the report shows (the CSV itself is a report item of rule ablation).
rule report_ablation:
    input:
        "results/ablation/ablation.csv",
    output:
        report("results/report/ablation.html", caption="../report/ablation.rst", category="Model"),
    params:
        config=rule_config_digest(config, "report_ablation"),
    log:
        "logs/report_ablation.log",
    threads: 1
    resources:
        mem_mb=per_attempt(500),
        runtime=per_attempt(5),
    conda:
        CONDA_ENV
    shell:
        pf("report-table") + " --csv {input} --title 'MMNTLSR ablation (test split)' --output {output} &> {log}"
