"""Handlers of the model subcommands: train, evaluate, export, quantize (these load PyTorch)."""

from __future__ import annotations

from typing import Any, Mapping

from pandafine.training.evaluate import evaluate_model
from pandafine.training.export import export_onnx
from pandafine.training.quantize import build_precision
from pandafine.training.train import train_model


def train(args, cfg: Mapping[str, Any]) -> None:
    train_model(cfg, args.tiles, args.out)


def evaluate(args, cfg: Mapping[str, Any]) -> None:
    evaluate_model(cfg, args.tiles, args.model_dir, args.out)


def export(args, cfg: Mapping[str, Any]) -> None:
    export_onnx(cfg, args.model_dir, args.tiles, args.output)


def quantize(args, cfg: Mapping[str, Any]) -> None:
    build_precision(args.model, args.precision, args.tiles, args.output)
