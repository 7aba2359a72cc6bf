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
        mem_mb=3000,
        runtime=60,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("mosaic") + " --input {input.frames} --grid {input.grid} --output {output} &> {log}"
