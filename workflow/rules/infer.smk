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


rule catalog:
    input:
        products=expand("results/panda_fine/PANDA-FINE_{year}.tif", year=YEARS),
        grid="results/grid.json",
    output:
        catalog="results/panda_fine/catalog.json",
        item_files=expand("results/panda_fine/items/PANDA-FINE_{year}.json", year=YEARS),
    log:
        "logs/catalog.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("catalog") + " --products {input.products} --grid {input.grid} --output {output.catalog} &> {log}"
