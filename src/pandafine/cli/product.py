"""Handlers of the product subcommands: assemble, report, report-fidelity, report-table, catalog, verify."""

from __future__ import annotations

import json
from typing import Any, Mapping

from pandafine.core.grid import Grid
from pandafine.product.assemble import assemble_product
from pandafine.product.catalog import build_catalog, find_products
from pandafine.product.provenance import run_verify
from pandafine.product.report import build_report, csv_to_html, fidelity_figure, year_map


def assemble(args, cfg: Mapping[str, Any]) -> None:
    assemble_product(args.blocks, Grid.read_json(args.grid), args.output, compress=cfg["product"]["compress"],
                     blocksize=int(cfg["product"]["blocksize"]))


def report(args, cfg: Mapping[str, Any]) -> None:
    build_report(year_map(args.products), year_map(args.panda), args.history, args.metrics, args.out,
                 landsat=year_map(args.landsat) if args.landsat else None, landsat_blocks=args.landsat_blocks,
                 level_json=args.level)


def report_fidelity(args, cfg: Mapping[str, Any]) -> None:
    fidelity_figure(json.loads(args.fidelity.read_text()), args.output)


def report_table(args, cfg: Mapping[str, Any]) -> None:
    csv_to_html(args.csv, args.output, title=args.title, notes=args.note)


def catalog(args, cfg: Mapping[str, Any]) -> None:
    build_catalog(cfg, find_products(args.products), args.output,
                  grid=Grid.read_json(args.grid) if args.grid else None)


def verify(args, cfg: Mapping[str, Any] | None) -> int:
    """Runs without a loaded config: ``--config`` is optional and read by :func:`run_verify` itself."""
    return run_verify(args.product_dir, model=args.model, config=args.config, cubes=args.cubes,
                      record=args.record)
