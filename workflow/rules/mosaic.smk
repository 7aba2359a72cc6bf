rule mosaic:
    input:
        frames="results/denoised/luojia/{year}",
        grid="results/grid.json",
    output:
        "results/target/{year}.tif",
    log:
        "logs/mosaic/{year}.log",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 3000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("mosaic") + " --input {input.frames} --grid {input.grid} --output {output} &> {log}"
