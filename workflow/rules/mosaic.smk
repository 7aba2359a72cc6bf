rule mosaic:
    input:
        frames="results/denoised/luojia/{year}",
        grid="results/grid.json",
    output:
        "results/target/{year}.tif",
    params:
        config=rule_config_digest(config, "mosaic"),
    log:
        "logs/mosaic/{year}.log",
    priority: 1
    threads: 1
    resources:
        mem_mb=per_attempt(3000),
        runtime=streaming_runtime("mosaic"),
    conda:
        CONDA_ENV
    shell:
        pf("mosaic") + " --input {input.frames} --grid {input.grid} --output {output} &> {log}"
