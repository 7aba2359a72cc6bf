"""Handlers of ``pandafine level`` and ``pandafine infer`` (onnxruntime; PyTorch only for generative checkpoints)."""

from __future__ import annotations

from typing import Any, Mapping

from pandafine.core.blocks import block_named
from pandafine.inference.infer import infer_year
from pandafine.inference.level import calibrate_level, read_level
from pandafine.tiles.cube import open_cube


def level(args, cfg: Mapping[str, Any]) -> None:
    calibrate_level(cfg, args.model, args.tiles, args.cubes, args.targets, args.output)


def infer(args, cfg: Mapping[str, Any]) -> None:
    area = None
    if args.block:
        area = block_named(open_cube(args.cube).grid, int(cfg["grid"].get("block", 0)), args.block).area
    infer_year(cfg, args.cube, args.model, args.output, year=args.year, require_gpu=cfg["infer"]["require_gpu"],
               area=area, level=read_level(args.level) if args.level else None)
