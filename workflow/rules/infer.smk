rule infer:
    input:
        cube="results/tiles/cube/{year}.zarr",
        model=f"results/models/{MODEL}/model.onnx",
    output:
        "results/panda_fine/PANDA-FINE_{year}.tif",
    log:
        "logs/infer/{year}.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("infer") + " --year {wildcards.year} --cube {input.cube} --model {input.model} --output {output} &> {log}"
