"""The ``pandafine`` command line: one subcommand per workflow stage.

Each subcommand reads the config, does one stage's work on the files it is
given and writes its outputs atomically, so every stage runs with or without
Snakemake. ``--threads`` caps every thread pool in the process (BLAS/OpenMP,
GDAL, dask, PyTorch, onnxruntime) and is set from the rule's ``threads``.

:mod:`~pandafine.cli.parser` defines the subcommands; each one names its
handler in one of the modules beside it (``prepare``, ``model``, ``inference``,
``product``, ``studies``), a function ``handler(args, cfg)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Callable

from pandafine.cli.parser import build_parser
from pandafine.core.runtime import limit_threads
from pandafine.sources.fetch import DownloadError  # standard library only: loads nothing heavy


def resolve_handler(spec: str) -> Callable:
    """The handler function of ``"module:function"`` in :mod:`pandafine.cli` (imports its module now)."""
    module, func = spec.split(":")
    return getattr(importlib.import_module(f"pandafine.cli.{module}"), func)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Cap thread pools before numpy, GDAL, torch or onnxruntime are imported (by the handler's module).
    limit_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    logging.basicConfig(level=logging.INFO, format=f"pandafine {args.command}: %(message)s")
    handler = resolve_handler(args.handler)
    try:
        cfg = None
        if getattr(args, "needs_config", True):
            from pandafine.config import load_config  # lazy: after limit_threads (it loads numpy via the sources)

            cfg = load_config(args.config)
        rc = handler(args, cfg)
    except (ValueError, FileNotFoundError, DownloadError) as exc:
        print(f"pandafine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return rc or 0


__all__ = ["build_parser", "main", "resolve_handler"]
