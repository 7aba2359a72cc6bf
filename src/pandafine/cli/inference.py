"""Handler of ``pandafine infer`` (onnxruntime; PyTorch only for generative checkpoints)."""

from __future__ import annotations

from typing import Any, Mapping

from pandafine.inference.infer import infer_year


def infer(args, cfg: Mapping[str, Any]) -> None:
    infer_year(cfg, args.cube, args.model, args.output, year=args.year, require_gpu=cfg["infer"]["require_gpu"])
