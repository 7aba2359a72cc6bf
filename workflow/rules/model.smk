rule train:
    input:
        "results/tiles/train.zarr",
    output:
        checkpoint=f"results/models/{MODEL}/checkpoint.pt",
        history=f"results/models/{MODEL}/history.csv",
    params:
        config=rule_config_digest(config, "train"),
    log:
        f"logs/train/{MODEL}.log",
    priority: 1
    threads: model_threads(4)
    resources:
        mem_mb=per_attempt(8000),
        runtime=per_attempt(600),
    conda:
        CONDA_ENV
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
    params:
        config=rule_config_digest(config, "evaluate"),
    log:
        f"logs/evaluate/{MODEL}.log",
    threads: model_threads(2)
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("evaluate") + f" --tiles {{input.tiles}} --model-dir results/models/{MODEL} --out results/models/{MODEL} &> {{log}}"


rule export:
    input:
        tiles="results/tiles/train.zarr",
        checkpoint=f"results/models/{MODEL}/checkpoint.pt",
    output:
        f"results/models/{MODEL}/model.onnx",
    params:
        config=rule_config_digest(config, "export"),
    log:
        f"logs/export/{MODEL}.log",
    threads: model_threads(2)
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("export") + f" --tiles {{input.tiles}} --model-dir results/models/{MODEL} --output {{output}} &> {{log}}"


rule level:
    # One scale for the products' total light, measured in context on the target years' train and val
    # patches (pandafine.inference.level); infer.level: none writes scale 1.
    input:
        model=MODEL_ONNX,
        tiles="results/tiles/train.zarr",
        cubes=expand("results/tiles/cube/{year}.zarr", year=TARGET_YEARS),
        targets=expand("results/target/{year}.tif", year=TARGET_YEARS),
    output:
        LEVEL_JSON,
    params:
        config=rule_config_digest(config, "level"),
    log:
        f"logs/level/{MODEL}.log",
    threads: model_threads(2)
    resources:
        mem_mb=per_attempt(INFER_MEM_MB),
        runtime=per_attempt(INFER_MINUTES * len(TARGET_YEARS) * LEVEL_BLOCKS),
    conda:
        CONDA_ENV
    shell:
        pf("level") + " --model {input.model} --tiles {input.tiles} --cubes {input.cubes} --targets {input.targets}"
        " --output {output} &> {log}"


rule quantize:
    input:
        tiles="results/tiles/train.zarr",
        model=f"results/models/{MODEL}/model.onnx",
    output:
        model=f"results/models/{MODEL}/model.{{precision}}.onnx",
        record=f"results/models/{MODEL}/model.{{precision}}.json",
    wildcard_constraints:
        precision="fp16|int8",
    params:
        config=rule_config_digest(config, "quantize"),
    log:
        f"logs/quantize/{MODEL}.{{precision}}.log",
    threads: model_threads(2)
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    conda:
        CONDA_ENV
    shell:
        pf("quantize") + " --tiles {input.tiles} --model {input.model} --precision {wildcards.precision} "
        "--output {output.model} &> {log}"


# Not part of `rule all`: `snakemake results/models/{model}/precision/precision.md`, the fp32/fp16/int8
# table (PSNR loss and speed ratio against fp32 on the test split).
rule precision:
    input:
        tiles="results/tiles/train.zarr",
        model=f"results/models/{MODEL}/model.onnx",
    output:
        json=f"results/models/{MODEL}/precision/precision.json",
        md=f"results/models/{MODEL}/precision/precision.md",
    params:
        config=rule_config_digest(config, "precision"),
    log:
        f"logs/precision/{MODEL}.log",
    threads: model_threads(2)
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(60),
    conda:
        CONDA_ENV
    shell:
        pf("precision") + f" --tiles {{input.tiles}} --model-dir results/models/{MODEL} "
        f"--out results/models/{MODEL}/precision &> {{log}}"


# Part of `rule all` and of the report when config `ablation.enabled` is true; otherwise run it
# with `snakemake results/ablation/ablation.csv`. `ablation.epochs`/`ablation.rows`/`ablation.seeds` become
# --epochs/--rows/--seeds (params: changing them reruns the rule). The row directories are not declared
# outputs, so a failed or interrupted ablation resumes where it stopped.
rule ablation:
    input:
        "results/tiles/train.zarr",
    output:
        csv=report("results/ablation/ablation.csv", caption="../report/ablation.rst", category="Model"),
        md="results/ablation/ablation.md",
    params:
        config=rule_config_digest(config, "ablation"),
        args=ABLATION_ARGS,
    log:
        "logs/ablation.log",
    threads: model_threads(4)
    resources:
        mem_mb=per_attempt(8000),
        runtime=per_attempt(6000),
    conda:
        CONDA_ENV
    shell:
        pf("ablation") + " --tiles {input} --out results/ablation {params.args} &> {log}"


# Not part of `rule all`: `snakemake results/models/<model>/uncertainty.json` (docs/models.md, "Calibrated
# uncertainty"). Trains (or reuses) the heteroscedastic head and the residual generative model on the trained
# model, fits their spread factors on the validation split and scores them and a constant spread on the test
# split and, with `uncertainty.holdout_tiles`, on another scene's patches. With `infer.ensemble` > 1 and a
# deterministic model the products sample the generative companion, so inference needs this rule.
rule uncertainty:
    input:
        tiles="results/tiles/train.zarr",
        checkpoint=f"results/models/{MODEL}/checkpoint.pt",
        holdout=UNCERTAINTY_HOLDOUT,
    output:
        json=f"results/models/{MODEL}/uncertainty.json",
        png=report(f"results/models/{MODEL}/uncertainty.png", caption="../report/uncertainty.rst",
                   category="Evaluation"),
        companion=COMPANION if UNCERTAINTY.get("generative", {}) is not None else [],
    params:
        config=rule_config_digest(config, "uncertainty"),
        holdout=f" --holdout {UNCERTAINTY_HOLDOUT}" if UNCERTAINTY_HOLDOUT else "",
    log:
        f"logs/uncertainty/{MODEL}.log",
    threads: model_threads(4)
    resources:
        mem_mb=per_attempt(8000),
        runtime=per_attempt(240),
    conda:
        CONDA_ENV
    shell:
        pf("uncertainty") + f" --tiles {{input.tiles}} --model-dir results/models/{MODEL} --out results/models/{MODEL}{{params.holdout}} &> {{log}}"


# Part of `rule all` when config `design_space.enabled` is true; otherwise run it with
# `snakemake results/design_space/design_space.csv`. The config's `design_space` section (defaults:
# pandafine.studies.design_space.DEFAULT_SPEC) names the models, samplers, step counts and precisions; it is
# a param, so changing it reruns the rule, and models and evaluations whose key did not change
# (results/design_space/models/<label>/, not declared outputs) are reused.
rule design_space:
    input:
        "results/tiles/train.zarr",
    output:
        csv="results/design_space/design_space.csv",
        md="results/design_space/design_space.md",
    params:
        config=rule_config_digest(config, "design_space"),
        spec=repr({k: v for k, v in DESIGN_SPACE.items() if k != "enabled"}),
    log:
        "logs/design_space.log",
    threads: model_threads(4)
    resources:
        mem_mb=per_attempt(8000),
        runtime=per_attempt(6000),
    conda:
        CONDA_ENV
    shell:
        pf("design-space") + " --tiles {input} --out results/design_space &> {log}"
