"""The ``pandafine`` command line: one subcommand per workflow stage.

Each subcommand reads the config, does one stage's work on the files it is
given and writes its outputs atomically, so every stage runs with or without
Snakemake. ``--threads`` caps every thread pool in the process (BLAS/OpenMP,
GDAL, dask, PyTorch, onnxruntime) and is set from the rule's ``threads``.

:mod:`~pandafine.cli.parser` defines the subcommands; each one names its
handler in one of the modules beside it (``prepare``, ``model``, ``inference``,
``product``, ``studies``), a function ``handler(args, cfg)``.

A stage that fails on a file prints one line (``pandafine STAGE: error: ...``)
instead of a traceback: a bad config or input (exit status 2), a truncated or
corrupt raster or a GDAL error (the file named), a failed write or a full disk
(the path and the free space; exit status 1). ``PANDAFINE_DEBUG=1`` in the
environment shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from pandafine.cli.parser import build_parser
from pandafine.core.faults import (  # standard library only: loads nothing heavy
    DiskFullError,
    RasterWriteError,
    disk_full_error,
    raster_failure_message,
)
from pandafine.core.runtime import limit_threads
from pandafine.sources.fetch import DownloadError  # standard library only: loads nothing heavy

#: Set (not "0") in the environment, a failing stage shows its traceback instead of one line.
DEBUG_ENV = "PANDAFINE_DEBUG"


def resolve_handler(spec: str) -> Callable:
    """The handler function of ``"module:function"`` in :mod:`pandafine.cli` (imports its module now)."""
    module, func = spec.split(":")
    return getattr(importlib.import_module(f"pandafine.cli.{module}"), func)


def arg_paths(args) -> list[Path]:
    """The paths among a stage's arguments (where the file named by a GDAL error is looked for)."""
    found = []
    for value in vars(args).values():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, Path):
                found.append(v)
    return found


def failure_message(exc: BaseException, args) -> str | None:
    """The one line for a file or disk failure that escaped a stage, None for other errors."""
    if isinstance(exc, DiskFullError):
        return str(exc)
    full = disk_full_error(exc, getattr(exc, "filename", None))
    if full is not None:
        return str(full)
    if isinstance(exc, RasterWriteError):
        return str(exc)
    return raster_failure_message(exc, arg_paths(args))


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
    except Exception as exc:
        message = failure_message(exc, args)
        if message is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"pandafine {args.command}: error: {message} (traceback: {DEBUG_ENV}=1)", file=sys.stderr)
        return 1
    return rc or 0


__all__ = ["build_parser", "failure_message", "main", "resolve_handler"]
