rule train:
    input:
        "results/tiles/train.zarr",
    output:
        checkpoint=f"results/models/{MODEL}/checkpoint.pt",
        history=f"results/models/{MODEL}/history.csv",
    log:
        f"logs/train/{MODEL}.log",
    threads: 4
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 600 * attempt,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("train") + f" --tiles {{input}} --out results/models/{MODEL} &> {{log}}"


rule evaluate:
    input:
        tiles="results/tiles/train.zarr",
        checkpoint=f"results/models/{MODEL}/checkpoint.pt",
    output:
        metrics=report(f"results/models/{MODEL}/metrics.json", category="Evaluation"),
        panels=report(f"results/models/{MODEL}/test_panels.png", caption="../report/test_panels.rst",
                      category="Evaluation"),
    log:
        f"logs/evaluate/{MODEL}.log",
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("evaluate") + f" --tiles {{input.tiles}} --model-dir results/models/{MODEL} --out results/models/{MODEL} &> {{log}}"


rule export:
    input:
        tiles="results/tiles/train.zarr",
        checkpoint=f"results/models/{MODEL}/checkpoint.pt",
    output:
        f"results/models/{MODEL}/model.onnx",
    log:
        f"logs/export/{MODEL}.log",
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("export") + f" --tiles {{input.tiles}} --model-dir results/models/{MODEL} --output {{output}} &> {{log}}"


# Not part of `rule all`: `snakemake results/ablation/ablation.csv`. The row directories are not
# declared outputs, so a failed or interrupted ablation resumes where it stopped.
rule ablation:
    input:
        "results/tiles/train.zarr",
    output:
        csv="results/ablation/ablation.csv",
        md="results/ablation/ablation.md",
    log:
        "logs/ablation.log",
    threads: 4
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 6000 * attempt,
    conda:
        "../../envs/pandafine.yaml"
    shell:
        pf("ablation") + " --tiles {input} --out results/ablation &> {log}"
