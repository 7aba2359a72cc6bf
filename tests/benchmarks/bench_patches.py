"""Training-set benchmark: :func:`pandafine.tiles.patches.build_training_set` on two regions, old and new.

Usage::

    python tests/benchmarks/bench_patches.py [--size S] [--tall] [--patch P] [--chunk C] [--years K]
                                             [--no-old] [--workdir DIR] [--json OUT]

For a square region of S working pixels per side and one of 2S (default S = 1024; patch
32 px, cube chunk 256 px, one year; ``--tall``: the large region is S wide and 4S tall, as
many patches, so that the region grows but the bands read do not), a cube
(``cube/{year}.zarr``, 11 channels, float32, as :func:`build_cube` writes it) and a target
GeoTIFF are synthesized in one subprocess (not measured): a smooth field plus noise, NaN
holes in Landsat and PANDA, and about a fifth of the patch positions without enough target
(rejected). Then, each in a fresh subprocess whose peak resident memory is ``ru_maxrss``
(GNU ``time``, ``bench_infer.measured_run``):

* ``baseline``: the imports, the opened inputs and one chunk read, nothing built;
* ``new``: the streaming :func:`~pandafine.tiles.patches.build_training_set` (bands of rows,
  patches written as they are cut, normalization streamed);
* ``old``: the former in-memory implementation, kept below as :func:`build_training_set_inmemory`
  (every patch read one by one, all held, stacked, written at the end).

Printed: patches, wall time and time per patch, peak RSS and its excess over the baseline,
the large/small ratios (the large region has 4x the patches) and old/new time per patch; and
whether the old and new ``train.zarr`` are identical (every array, bit for bit, and the
attributes). The new implementation holds a few full-width bands (at most
:data:`~pandafine.tiles.patches.BAND_BYTES` of cube each), so its memory follows the
region's width up to that cap and not its height. Nothing is asserted. Not collected by
pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import measured_run  # noqa: E402  (benchmarks share their helpers)

REPO = Path(__file__).resolve().parents[2]
YEAR0 = 2018


# ----------------------------------------------------------------------------- the former implementation


def build_training_set_inmemory(cube_paths: Mapping[int, str | Path], target_paths: Mapping[int, str | Path],
                                out_path: str | Path, params, *, min_valid: float = 0.5) -> Path:
    """The implementation before streaming (commit 212a990), for comparison: all patches in memory."""
    import zarr
    from rasterio.windows import Window

    from pandafine.core.atomic import atomic_path
    from pandafine.core.channels import CHANNELS
    from pandafine.core.raster_io import open_raster
    from pandafine.tiles.cube import open_cube
    from pandafine.tiles.patches import assign_splits, channel_moments, normalization, patch_origins
    from pandafine.tiles.store import SPLIT_NAMES

    log = logging.getLogger(__name__)
    if set(cube_paths) != set(target_paths):
        raise ValueError(f"years with cubes {sorted(cube_paths)} differ from years with targets {sorted(target_paths)}")
    P = params.patch
    inputs, targets, years, rows, cols = [], [], [], [], []
    grid = None
    for year in sorted(cube_paths):
        opened = open_cube(cube_paths[year])
        if opened.channels != CHANNELS:
            raise ValueError(f"{cube_paths[year]}: channels {list(opened.channels)} differ from the expected "
                             f"{list(CHANNELS)}")
        cube, cgrid = opened.inputs, opened.grid
        if grid is None:
            grid = cgrid
        elif not grid.same_as(cgrid):
            raise ValueError(f"{cube_paths[year]}: grid differs from the other years' cubes")
        with open_raster(target_paths[year]) as tgt:
            if (tgt.height, tgt.width) != grid.shape:
                raise ValueError(f"{target_paths[year]}: target is {tgt.height}x{tgt.width}, "
                                 f"the working grid is {grid.height}x{grid.width}")
            for r, c in patch_origins(grid.height, grid.width, P):
                t = tgt.read(1, window=Window(c, r, P, P)).astype(np.float32)
                if np.isfinite(t).mean() < min_valid:
                    continue
                x = np.asarray(cube[:, r:r + P, c:c + P])
                if not np.isfinite(x[0]).any():
                    continue
                inputs.append(x)
                targets.append(t[None])
                years.append(year)
                rows.append(r)
                cols.append(c)
    if not inputs:
        raise ValueError(f"no training patch of {P}x{P} px has >= {min_valid:.0%} valid target pixels in "
                         f"{', '.join(str(p) for p in target_paths.values())}")
    split = assign_splits(list(zip(rows, cols)), params)
    inputs_arr = np.stack(inputs)
    moments = channel_moments(inputs_arr[split == 0])
    mean, std = normalization(moments)
    constant = [name for name, (_, _, flat) in zip(CHANNELS, moments) if flat]
    if constant:
        log.warning("%s: channel(s) %s are constant on the training split (centred, not scaled): the model "
                    "learns nothing from them", out_path, ", ".join(constant))
    n = len(inputs)
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(zarr.storage.LocalStore(tmp), mode="w")
        root.create_array("inputs", data=inputs_arr, chunks=(1, len(CHANNELS), P, P))
        root.create_array("target", data=np.stack(targets), chunks=(1, 1, P, P))
        root.create_array("split", data=split)
        root.create_array("year", data=np.array(years, dtype=np.int32))
        root.create_array("row", data=np.array(rows, dtype=np.int32))
        root.create_array("col", data=np.array(cols, dtype=np.int32))
        root.attrs.update({"channels": list(CHANNELS), "patch": P, "grid": grid.to_dict(),
                           "normalization": {"mean": mean, "std": std},
                           "counts": {s: int((split == i).sum()) for i, s in enumerate(SPLIT_NAMES)},
                           "n_patches": n, "seed": params.seed, "split_block": params.split_block})
    return Path(out_path)


# ----------------------------------------------------------------------------- synthetic region


def bench_grid(width: int, height: int):
    from affine import Affine

    from pandafine.core.grid import CHINA_ALBERS, Grid

    return Grid(CHINA_ALBERS, Affine(125.0, 0, -1_000_000.0, 0, -125.0, 4_000_000.0), width, height, 8)


def field(rows: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """A smooth closed-form field (continuous across bands), different per channel ``k``."""
    return (np.sin(rows[:, None] / (37.0 + 5 * k)) * np.cos(cols[None, :] / (53.0 + 3 * k)) + 1.5).astype(np.float32)


def synthesize(width: int, height: int, patch: int, chunk: int, years: int, root: Path) -> None:
    """Cubes and targets of ``years`` years on a ``width`` x ``height`` px grid, written band by band."""
    import zarr

    from pandafine.core.channels import CHANNELS
    from pandafine.core.raster_io import write_raster
    from pandafine.tiles.cube import write_grid_mapping

    grid = bench_grid(width, height)
    cols = np.arange(width)
    for y in range(years):
        year = YEAR0 + y
        rng = np.random.default_rng(year)
        target = np.empty(grid.shape, np.float32)
        g = zarr.open_group(zarr.storage.LocalStore(root / "cube" / f"{year}.zarr"), mode="w")
        arr = g.create_array("inputs", shape=(len(CHANNELS), height, width), dtype="float32",
                             chunks=(len(CHANNELS), chunk, chunk), fill_value=np.nan,
                             dimension_names=("channel", "y", "x"))
        for r0 in range(0, height, chunk):
            rows = np.arange(r0, min(height, r0 + chunk))
            band = np.stack([field(rows, cols, k) for k in range(len(CHANNELS))])
            band += rng.normal(0, 0.05, band.shape).astype(np.float32)
            band = np.round(band * 100, 1) / 100  # a little compressible, like real data
            band[2:9, :, (cols // 97) % 7 == 3] = np.nan          # Landsat gaps
            hole = ((rows[:, None] // patch) % 11 == 4) & ((cols[None, :] // patch) % 13 == 6)
            band[:2, hole] = np.nan                               # patches without PANDA
            arr[:, rows[0]:rows[-1] + 1, :] = band
            t = band[0] * 10 + rng.normal(0, 0.1, band[0].shape).astype(np.float32)
            t[((rows[:, None] // patch) + (cols[None, :] // patch)) % 5 == 2] = np.nan  # ~1/5 rejected
            target[rows[0]:rows[-1] + 1] = t
        g.attrs.update({"channels": list(CHANNELS), "year": year, "grid": grid.to_dict(),
                        "crs_wkt": grid.to_dict()["crs_wkt"], "transform": list(grid.transform)[:6]})
        write_grid_mapping(g, arr, grid)
        write_raster(root / "target" / f"{year}.tif", target, grid, nodata=np.nan)


def inputs_of(root: Path) -> tuple[dict, dict]:
    cubes = {int(p.stem): p for p in sorted((root / "cube").glob("*.zarr"))}
    return cubes, {y: root / "target" / f"{y}.tif" for y in cubes}


# ----------------------------------------------------------------------------- children


def child(mode: str, root: Path, out: Path, patch: int) -> None:
    import rasterio
    import rasterio.windows  # noqa: F401  (imported by the builds: not timed)
    import zarr  # noqa: F401

    from pandafine.tiles import patches as PT
    from pandafine.tiles.cube import open_cube

    cubes, targets = inputs_of(root)
    params = PT.SplitParams(patch, 2, (0.7, 0.15, 0.15), 42)
    t0 = time.perf_counter()
    if mode == "baseline":  # the fixed cost: opened inputs, one chunk decoded
        for y in cubes:
            np.asarray(open_cube(cubes[y]).inputs[:, :1, :1])
            with rasterio.open(targets[y]) as tgt:
                tgt.read(1, window=rasterio.windows.Window(0, 0, 1, 1))
        n = 0
    else:
        fn = PT.build_training_set if mode == "new" else build_training_set_inmemory
        fn(cubes, targets, out, params)
        n = int(json.loads((out / "zarr.json").read_text())["attributes"]["n_patches"])
    (out.parent / f"{out.name}.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, "n": n}))


def run_child(args: list[str]) -> float:
    """Run ``python this_file args``; return the child's peak RSS (MiB, :func:`bench_infer.measured_run`)."""
    return measured_run([sys.executable, __file__, *args])[0]


def identical(a: Path, b: Path) -> bool:
    import zarr

    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    if sorted(ga.array_keys()) != sorted(gb.array_keys()) or dict(ga.attrs) != dict(gb.attrs):
        return False
    return all(ga[k].metadata == gb[k].metadata and np.asarray(ga[k][:]).tobytes() == np.asarray(gb[k][:]).tobytes()
               for k in ga.array_keys())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="side S of the small region (px); the large one is 2S")
    ap.add_argument("--tall", action="store_true", help="the large region is S wide and 4S tall")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--years", type=int, default=1)
    ap.add_argument("--no-old", action="store_true", help="skip the former in-memory implementation")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, root, out = args.child
        if mode == "synth":
            synthesize(*map(int, out.split("x")), args.patch, args.chunk, args.years, Path(root))
        elif mode == "compare":
            Path(out).write_text(json.dumps(identical(Path(root) / "new.zarr", Path(root) / "old.zarr")))
        else:
            child(mode, Path(root), Path(out), args.patch)
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_patches."))
    modes = ["baseline", "new"] + ([] if args.no_old else ["old"])
    results = {}
    common = ["--patch", str(args.patch), "--chunk", str(args.chunk), "--years", str(args.years)]
    S = args.size
    regions = [f"{S}x{S}", f"{S}x{4 * S}" if args.tall else f"{2 * S}x{2 * S}"]  # width x height
    for region in regions:
        root = work / region
        if not (root / "target").is_dir():
            t0 = time.perf_counter()
            run_child(common + ["--child", "synth", str(root), region])
            print(f"synthesized {region} px x {args.years} year(s) in {time.perf_counter() - t0:.1f} s", flush=True)
        for mode in modes:
            out = root / f"{mode}.zarr"
            shutil.rmtree(out, ignore_errors=True)  # not timed
            rss = run_child(common + ["--child", mode, str(root), str(out)])
            rec = json.loads((root / f"{mode}.zarr.json").read_text())
            results[(region, mode)] = {"region": region, "mode": mode, "rss_mib": rss, **rec}
            print(f"  {region:>10} px {mode:>8}: {rec['n']:>6} patches {rec['seconds']:8.2f} s  "
                  f"peak RSS {rss:8.1f} MiB", flush=True)
        if not args.no_old:  # in a child too: the parent stays small (a child's ru_maxrss counts it from fork)
            run_child(common + ["--child", "compare", str(root), str(root / "identical.json")])
            results[(region, "identical")] = json.loads((root / "identical.json").read_text())

    small, large = regions
    print(f"\npatch {args.patch} px, cube chunk {args.chunk} px, {args.years} year(s); regions (width x height) "
          f"{small} and {large} px")
    print(f"{'':>18} {'patches':>8} {'s':>8} {'ms/patch':>9} {'RSS MiB':>9} {'RSS-base':>9}")
    for region in regions:
        base = results[(region, "baseline")]["rss_mib"]
        for mode in modes:
            r = results[(region, mode)]
            per = 1e3 * r["seconds"] / r["n"] if r["n"] else float("nan")
            print(f"{mode + ' ' + region:>18} {r['n']:>8} {r['seconds']:8.2f} {per:9.3f} {r['rss_mib']:9.1f} "
                  f"{r['rss_mib'] - base:9.1f}")
    print(f"\nratios {large} / {small} (patches x{results[(large, 'new')]['n'] / results[(small, 'new')]['n']:.2f}):")
    for mode in modes[1:]:
        a, b = results[(small, mode)], results[(large, mode)]
        da = a["rss_mib"] - results[(small, "baseline")]["rss_mib"]
        db = b["rss_mib"] - results[(large, "baseline")]["rss_mib"]
        print(f"  {mode:>4}: peak RSS x{b['rss_mib'] / a['rss_mib']:.2f}, "
              f"RSS above baseline x{db / max(da, 1e-9):.2f}, time x{b['seconds'] / a['seconds']:.2f}")
    if not args.no_old:
        for region in regions:
            o, n = results[(region, "old")], results[(region, "new")]
            print(f"  old/new at {region} px: time per patch x{(o['seconds'] / o['n']) / (n['seconds'] / n['n']):.2f}"
                  f", peak RSS x{o['rss_mib'] / n['rss_mib']:.2f}; train.zarr identical: "
                  f"{results[(region, 'identical')]}")
    if args.json:
        args.json.write_text(json.dumps([r if isinstance(r, dict) else {"region": g, "identical": r}
                                         for (g, _), r in results.items()], indent=1))
    print(f"\n(work directory: {work})")


if __name__ == "__main__":
    main()
