"""``uncertainty.png``: spread next to absolute error on test patches, and the reliability curves.

Drawn by ``pandafine uncertainty`` beside ``uncertainty.json``; the uncertainty rule declares it a
report output, so ``snakemake --report`` shows it once the rule has run. Pure drawing: the arrays
come from :mod:`pandafine.studies.uncertainty_eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pandafine.core.atomic import atomic_path
from pandafine.training.evaluate import draw_patch_grid

#: Methods drawn on the reliability panel, with their labels.
METHOD_LABELS = {"ensemble": "residual flow ensemble", "gaussian_hetero": "heteroscedastic head",
                 "gaussian_constant": "constant spread"}


def uncertainty_figure(path, patches: Mapping[str, np.ndarray], reliability: Mapping[str, Sequence[Mapping]],
                       *, title: str) -> Path:
    """Write the figure to ``path`` (atomically).

    Parameters
    ----------
    patches : mapping
        ``(k, P, P)`` arrays in z: ``target``, ``mean`` (the ensemble mean, or the base), ``spread``
        (the ensemble's calibrated spread, or the head's sigma) and optionally ``sigma`` (the head's).
        One row per patch: target, mean, |mean - target|, spread[, sigma].
    reliability : mapping
        ``{method: reliability bins}`` as in ``uncertainty.json`` (``spread_rms``, ``rmse``).
    title : str
        Figure title (scene and model).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target, mean = patches["target"], patches["mean"]
    err = np.abs(mean - target)
    vmax = float(np.nanmax(target)) if np.isfinite(target).any() else 1.0
    # the 99th percentile: a few misregistered pixels would otherwise set the scale of both
    smax = float(np.nanmax([np.nanpercentile(err, 99), np.nanpercentile(patches["spread"], 99)])) or 1.0
    cols = [("target z", target, dict(cmap="magma", vmin=0, vmax=vmax)),
            ("ensemble mean z", mean, dict(cmap="magma", vmin=0, vmax=vmax)),
            ("|mean - target|", err, dict(cmap="viridis", vmin=0, vmax=smax)),
            ("ensemble spread", patches["spread"], dict(cmap="viridis", vmin=0, vmax=smax))]
    if "sigma" in patches:
        cols.append(("head sigma", patches["sigma"], dict(cmap="viridis", vmin=0, vmax=smax)))
    rows = len(target)
    fig = plt.figure(figsize=(2.3 * len(cols) + 4.2, 2.3 * rows + 0.8))
    grid = fig.add_gridspec(rows, len(cols) + 3)  # a blank column before the reliability panel
    draw_patch_grid(fig, lambda r, c: fig.add_subplot(grid[r, c]), cols, rows)
    ax = fig.add_subplot(grid[:, len(cols) + 1:])
    top = 0.0
    for method, bins in reliability.items():
        s = [b["spread_rms"] for b in bins if b.get("spread_rms") is not None and b.get("rmse") is not None]
        e = [b["rmse"] for b in bins if b.get("spread_rms") is not None and b.get("rmse") is not None]
        if s:
            ax.plot(s, e, "o-", label=METHOD_LABELS.get(method, method), ms=4)
            top = max(top, max(s), max(e))
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="calibrated")
    ax.set_xlabel("RMS spread of the bin (z)")
    ax.set_ylabel("RMSE of the point forecast (z)")
    ax.set_title("reliability (spread deciles)", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


__all__ = ["uncertainty_figure", "METHOD_LABELS"]
