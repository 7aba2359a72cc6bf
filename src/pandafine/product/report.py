"""Figures and tables for ``snakemake --report``.

Pure summaries (:func:`yearly_totals`, :func:`metrics_rows`) are separate from
the plotting and file writing. Every figure is written through a temporary file
and a rename.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from pandafine.core.atomic import atomic_path, write_text_atomic
from pandafine.preprocess.landsat_composite import LandsatCoverage


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return Path(path)


def read_decimated(path: str | Path, max_size: int = 256) -> np.ndarray:
    """Band 1 of a raster read at most ``max_size`` pixels on its long side (uses overviews), NaN nodata."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        step = max(1, math.ceil(max(src.width, src.height) / max_size))
        shape = (max(1, src.height // step), max(1, src.width // step))
        arr = src.read(1, out_shape=shape, resampling=Resampling.average, masked=True).astype(np.float32)
    return arr.filled(np.nan)


def raster_total(path: str | Path, band: int = 1) -> tuple[float, int]:
    """Sum of the finite values of a band and the number of finite pixels, read block by block."""
    import rasterio

    total, count = 0.0, 0
    with rasterio.open(path) as src:
        for _, win in src.block_windows(band):
            a = src.read(band, window=win, masked=True).astype(np.float64).filled(np.nan)
            finite = np.isfinite(a)
            total += float(a[finite].sum())
            count += int(finite.sum())
    return total, count


def yearly_totals(products: Mapping[int, str | Path], panda: Mapping[int, str | Path]) -> list[dict]:
    """Per year: total product radiance (sum over pixels) and total PANDA DN, and each relative to its mean."""
    rows = []
    for year in sorted(products):
        light, n = raster_total(products[year])
        dn, _ = raster_total(panda[year]) if year in panda else (float("nan"), 0)
        rows.append({"year": year, "product_total_radiance": light, "product_valid_pixels": n, "panda_total_dn": dn})
    for key in ("product_total_radiance", "panda_total_dn"):
        vals = np.array([r[key] for r in rows], dtype=float)
        mean = np.nanmean(vals) if np.isfinite(vals).any() else float("nan")
        for r, v in zip(rows, vals):
            r[key.replace("total", "relative")] = float(v / mean) if mean else float("nan")
    return rows


def _csv(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


_TABLE_STYLE = (
    "body{font-family:sans-serif;font-size:13px;margin:12px;color:#111}"
    "table{border-collapse:collapse}caption{text-align:left;font-weight:bold;padding:4px 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f2f2f2}td.num{text-align:right}"
    "p{max-width:60em}"
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, title: str,
               notes: Sequence[str] = ()) -> str:
    """A self-contained HTML page holding one table (no script, no external resource).

    Cells are escaped; cells that parse as numbers are right-aligned. ``notes``
    are paragraphs of plain text below the table.
    """
    width = len(header)
    bad = [i for i, r in enumerate(rows) if len(r) != width]
    if bad:
        raise ValueError(f"table {title!r}: rows {bad} do not have {width} cells like the header {list(header)}")
    esc = html.escape
    lines = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
             f"<style>{_TABLE_STYLE}</style></head><body>", f"<table><caption>{esc(title)}</caption>",
             "<thead><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cells = [str(c) for c in r]
        lines.append("<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if c and _is_number(c) else f"<td>{esc(c)}</td>"
                                      for c in cells) + "</tr>")
    lines.append("</tbody></table>")
    lines += [f"<p>{esc(n)}</p>" for n in notes]
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def csv_to_html(csv_path: str | Path, html_path: str | Path, *, title: str, notes: Sequence[str] = ()) -> Path:
    """Write the CSV file ``csv_path`` as a one-table HTML page (see :func:`html_table`)."""
    with open(csv_path, newline="") as fh:
        table = list(csv.reader(fh))
    if not table:
        raise ValueError(f"{csv_path}: empty CSV, expected a header row")
    return write_text_atomic(html_path, html_table(table[0], table[1:], title=title, notes=notes))


def metrics_rows(metrics: Mapping) -> list[dict]:
    """One row per method of a ``metrics.json`` test split, flat and ready for a table."""
    split = metrics["test_split"]
    methods = [k for k, v in split.items() if isinstance(v, dict) and "psnr_log_db" in v]
    return [{"method": m, **{k: v for k, v in split[m].items() if not isinstance(v, (dict, list))}} for m in methods]


def quicklook_grid(products: Mapping[int, str | Path], out_png: str | Path, *, max_size: int = 160) -> Path:
    """One log-scaled quicklook panel per year, on a common colour scale."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    years = sorted(products)
    images = {y: read_decimated(products[y], max_size) for y in years}
    positive = np.concatenate([im[np.isfinite(im) & (im > 0)] for im in images.values()] or [np.array([1.0])])
    vmin = float(np.percentile(positive, 5)) if positive.size else 1e-8
    vmax = float(positive.max()) if positive.size else 1.0
    ncol = min(8, len(years))
    nrow = math.ceil(len(years) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.9 * ncol, 2.0 * nrow + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, y in zip(axes.flat, years):
        im = np.where(images[y] > 0, images[y], np.nan)
        handle = ax.imshow(im, cmap="magma", norm=LogNorm(vmin=max(vmin, 1e-12), vmax=max(vmax, 2e-12)))
        ax.set_title(str(y), fontsize=9)
    fig.colorbar(handle, ax=axes, shrink=0.6, label="radiance (W m-2 sr-1 um-1, log scale)")
    fig.suptitle("PANDA-FINE yearly quicklooks")
    return _save(fig, out_png)


def training_curve(history_csv: str | Path, out_png: str | Path) -> Path:
    """Training loss and validation PSNR per epoch from ``history.csv``."""
    plt = _pyplot()
    with open(history_csv) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{history_csv}: no epoch recorded")
    epoch = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epoch, [float(r["train_loss"]) for r in rows], color="tab:blue", label="train L1 (log radiance)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(epoch, [float(r["val_psnr_log"]) for r in rows], color="tab:red", label="val PSNR (log)")
    ax2.set_ylabel("validation PSNR, log radiance (dB)", color="tab:red")
    ax.set_title("Training curve")
    return _save(fig, out_png)


def total_light_figure(rows: Sequence[Mapping], out_png: str | Path) -> Path:
    """Yearly total light of the product against PANDA's, each relative to its own mean."""
    plt = _pyplot()
    years = [r["year"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(years, [r["product_relative_radiance"] for r in rows], "o-", label="PANDA-FINE total radiance")
    ax.plot(years, [r["panda_relative_dn"] for r in rows], "s--", label="PANDA total DN")
    ax.set_xlabel("year")
    ax.set_ylabel("total relative to its mean")
    ax.legend()
    ax.set_title("Temporal consistency: yearly total light")
    return _save(fig, out_png)


def fidelity_figure(fidelity: Mapping, out_png: str | Path) -> Path:
    """Yearly total light of the product, its Luojia-01-scale reference and the PANDA baseline (``fidelity.json``).

    The TM/ETM+ years are shaded; the title gives the product's and the reference's change
    across the sensor step and the product / reference ratio over the years.
    """
    plt = _pyplot()
    rows = sorted(fidelity["years"].values(), key=lambda r: r["year"])
    years = [r["year"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    tm = [y for y, r in zip(years, rows) if r["era"] != "OLI"]
    if tm:
        ax.axvspan(min(tm) - 0.5, max(tm) + 0.5, color="0.92", zorder=0, label="TM/ETM+ inputs")
    ax.plot(years, [r["reference"] for r in rows], "k-", label="reference (truth on the Luojia-01 scale)")
    ax.plot(years, [r["product"] for r in rows], "o-", color="tab:blue", label="PANDA-FINE")
    if all(r.get("panda_baseline") is not None for r in rows):
        ax.plot(years, [r["panda_baseline"] for r in rows], "s--", color="tab:orange", ms=3,
                label="PANDA (interpolation baseline)")
    ax.set_xlabel("year")
    ax.set_ylabel("total radiance (sum over the region)")
    ratios = np.array([r["total_light_ratio"] for r in rows], float)
    title = f"Total light: product / reference {np.nanmin(ratios):.2f}-{np.nanmax(ratios):.2f}"
    step = fidelity.get("sensor_step")
    if step:
        title += (f"; {step['from']}->{step['to']}: product {100 * step['product_change']:+.1f} %, "
                  f"reference {100 * step['reference_change']:+.1f} %")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out_png)


def landsat_coverage_rows(composites: Mapping[int, str | Path]) -> list[dict]:
    """Per year: scenes over the grid and the composite's clear and valid coverage (percent of the grid)."""
    import rasterio

    rows = []
    for year in sorted(composites):
        with rasterio.open(composites[year]) as src:
            try:
                cov = LandsatCoverage.from_tags(src.tags())
            except KeyError as exc:
                raise ValueError(f"{composites[year]}: no coverage tag {exc}; expected a Landsat composite "
                                 "written by `pandafine denoise --layer landsat`") from None
        rows.append({"year": year, "scenes": cov.scenes, "clear_percent": round(100 * cov.clear, 2),
                     "valid_percent": round(100 * cov.valid, 2)})
    return rows


def landsat_block_rows(records: Iterable[str | Path]) -> list[dict]:
    """Per year and block: scenes read and the block's clear coverage (percent), from the ``{block}.json`` records
    that ``pandafine landsat-block`` writes beside each block composite."""
    rows = []
    for p in records:
        try:
            doc = json.loads(Path(p).read_text())
            rows.append({"year": int(doc["year"]), "block": str(doc["block"]),
                         "scenes": int(doc["read"]) + int(doc["resumed"]), "outside": int(doc["outside"]),
                         "clear_percent": round(100 * float(doc["clear_coverage"]), 2)})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{p}: not a Landsat block record written by `pandafine landsat-block` ({exc})") from None
    return sorted(rows, key=lambda r: (r["year"], r["block"]))


def landsat_coverage_figure(rows: Sequence[Mapping], out_png: str | Path) -> Path:
    """Clear-observation coverage of every (year, block): a year x block map (one block: bars per year)."""
    plt = _pyplot()
    years = sorted({r["year"] for r in rows})
    blocks = sorted({r["block"] for r in rows})
    table = np.full((len(blocks), len(years)), np.nan)
    for r in rows:
        table[blocks.index(r["block"]), years.index(r["year"])] = r["clear_percent"]
    if len(blocks) == 1:
        fig, ax = plt.subplots(figsize=(max(6, 0.2 * len(years)), 2.6))
        ax.bar(years, table[0], color="tab:green")
        ax.set_ylim(0, 100)
        ax.set_ylabel("clear observations (%)")
        ax.set_title(f"Landsat clear coverage of block {blocks[0]} per year", fontsize=9)
    else:
        fig, ax = plt.subplots(figsize=(max(6, 0.2 * len(years)), max(2.5, 0.12 * len(blocks))))
        im = ax.imshow(table, aspect="auto", vmin=0, vmax=100, cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(len(years))[::max(1, len(years) // 12)])
        ax.set_xticklabels(years[::max(1, len(years) // 12)], fontsize=7)
        ax.set_yticks(range(len(blocks))[::max(1, len(blocks) // 20)])
        ax.set_yticklabels(blocks[::max(1, len(blocks) // 20)], fontsize=6)
        fig.colorbar(im, ax=ax, label="clear observations (%)")
        ax.set_title("Landsat clear coverage per block and year (before gap filling)", fontsize=9)
    ax.set_xlabel("year")
    return _save(fig, out_png)


def build_report(products: Mapping[int, str | Path], panda: Mapping[int, str | Path], history_csv: str | Path,
                 metrics_json: str | Path, out_dir: str | Path,
                 landsat: Mapping[int, str | Path] | None = None,
                 landsat_blocks: Sequence[str | Path] | None = None,
                 level_json: str | Path | None = None) -> list[Path]:
    """Write every report figure and table into ``out_dir``; return their paths.

    With ``level_json`` (``level.json`` of :mod:`pandafine.inference.level`), the metrics table gets
    a note with the products' level scale and the test split's figures in context (:func:`level_note`).

    With ``landsat`` ({year: composite}), also ``landsat_coverage.csv``
    (:func:`landsat_coverage_rows`); with ``landsat_blocks`` (the block records
    ``{year}/{block}.json``), ``landsat_block_coverage.csv`` and ``landsat_coverage.png``.
    """
    out_dir = Path(out_dir)
    rows = yearly_totals(products, panda)
    metrics = json.loads(Path(metrics_json).read_text())
    mrows = metrics_rows(metrics)
    mcols = ["method"] + [k for k in mrows[0] if k != "method"] if mrows else ["method"]
    return [
        quicklook_grid(products, out_dir / "quicklooks.png"),
        training_curve(history_csv, out_dir / "training_curve.png"),
        total_light_figure(rows, out_dir / "total_light.png"),
        write_text_atomic(out_dir / "total_light.csv", _csv(rows, list(rows[0]))),
        write_text_atomic(out_dir / "metrics.csv", _csv(mrows, mcols)),
        csv_to_html(out_dir / "metrics.csv", out_dir / "metrics.html", title="Test-split metrics",
                    notes=[_data_range_note(metrics)] + ([level_note(json.loads(Path(level_json).read_text()))]
                                                         if level_json else [])),
    ] + ([write_text_atomic(out_dir / "landsat_coverage.csv",
                            _csv(landsat_coverage_rows(landsat), ["year", "scenes", "clear_percent", "valid_percent"]))]
         if landsat else []) + (_landsat_block_outputs(landsat_blocks, out_dir) if landsat_blocks else [])


def _landsat_block_outputs(records: Sequence[str | Path], out_dir: Path) -> list[Path]:
    rows = landsat_block_rows(records)
    return [write_text_atomic(out_dir / "landsat_block_coverage.csv",
                              _csv(rows, ["year", "block", "scenes", "outside", "clear_percent"])),
            landsat_coverage_figure(rows, out_dir / "landsat_coverage.png")]


def _data_range_note(metrics: Mapping) -> str:
    rng = metrics["test_split"].get("data_range", {})
    stated = ", ".join(f"{k}: {v:.6g}" if isinstance(v, (int, float)) else f"{k}: {v}" for k, v in rng.items())
    return f"PSNR data range ({stated}); all values from metrics.json." if stated else "Values from metrics.json."


def level_note(level: Mapping) -> str:
    """One sentence on the level scale of ``level.json`` and the test split in context, before and after it."""
    scale = float(level["scale"])
    if level.get("method") == "none" or "pooled" not in level:
        return f"The products are not rescaled (infer.level: {level.get('method', 'none')}; scale {scale:g})."
    test = level["pooled"].get("test", {})
    bright = level.get("test_brightest_1pct_error", {})
    parts = [f"The products are multiplied by the level scale {scale:.4f} (level.json: sum of target over sum of "
             "prediction on the train and val patches of the target years, predicted in context)."]
    if test:
        parts.append(f"Test split in context (the products' pixels, not isolated patches): total light ratio "
                     f"{test['ratio']:.3f} before, {test['ratio_scaled']:.3f} after")
        if bright:
            parts[-1] += f"; brightest-1 % error {bright['before']:+.3f} before, {bright['after']:+.3f} after"
        parts[-1] += "."
    return " ".join(parts)


def year_map(paths: Iterable[str | Path]) -> dict[int, Path]:
    """{year: path} from file names ending in the year (``PANDA-FINE_2018.tif``, ``2018.tif``)."""
    out = {}
    for p in paths:
        p = Path(p)
        digits = p.stem[-4:]
        if not digits.isdigit():
            raise ValueError(f"{p}: expected a file name ending in a 4-digit year")
        out[int(digits)] = p
    return out
