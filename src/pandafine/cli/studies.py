"""Handlers of the study subcommands: temporal, fidelity, ablation, design-space, precision, uncertainty."""

from __future__ import annotations

from typing import Any, Mapping

from pandafine.studies.ablation import parse_rows, parse_seeds, run_ablation
from pandafine.studies.design_space import run_design_space
from pandafine.studies.fidelity import evaluate_fidelity
from pandafine.studies.precision import evaluate_precisions
from pandafine.studies.temporal import evaluate_temporal, files_by_year
from pandafine.studies.uncertainty_eval import evaluate_uncertainty


def temporal(args, cfg: Mapping[str, Any]) -> None:
    panda = files_by_year(args.panda, "--panda") if args.panda else None
    evaluate_temporal(files_by_year(args.products, "--products"), files_by_year(args.truths, "--truths"),
                      args.metrics, args.output, panda=panda, factor=int(cfg["grid"]["factor"]),
                      train_years=cfg["run"]["target_years"], fidelity_json=args.fidelity)


def fidelity(args, cfg: Mapping[str, Any]) -> None:
    evaluate_fidelity(files_by_year(args.products, "--products"), files_by_year(args.truths, "--truths"),
                      files_by_year(args.targets, "--targets"), args.output,
                      panda=files_by_year(args.panda, "--panda") if args.panda else None,
                      metrics_json=args.metrics, factor=int(cfg["grid"]["factor"]))


def ablation(args, cfg: Mapping[str, Any]) -> None:
    run_ablation(cfg, args.tiles, args.out, rows=parse_rows(args.rows), epochs=args.epochs,
                 seeds=parse_seeds(args.seeds))


def design_space(args, cfg: Mapping[str, Any]) -> None:
    run_design_space(cfg, args.tiles, args.out, spec_path=args.spec, epochs=args.epochs)


def precision(args, cfg: Mapping[str, Any]) -> None:
    evaluate_precisions(cfg, args.tiles, args.model_dir / "model.onnx", args.out, repeats=args.repeats)


def uncertainty(args, cfg: Mapping[str, Any]) -> None:
    evaluate_uncertainty(cfg, args.tiles, args.model_dir, args.out, holdout_tiles=args.holdout,
                         members=args.members, epochs=args.epochs)
