"""Spatial blocks: peak memory of a block's jobs does not grow with the region.

Usage::

    python tests/benchmarks/bench_blocks.py [--block 1024] [--sizes 2 4] [--threads 2] [--rss-model unet:4:1]
                                            [--keep DIR]
    python tests/benchmarks/bench_blocks.py --assemble-only [--block 2560] [--sizes 4 8] [--keep DIR]

For a synthetic square region of K1 x K1 blocks and one of K2 x K2 blocks (``--sizes``, blocks per
side; by default 2 and 4: 4x the area, same ``grid.block``), each written as an inference cube on
disk (band by band, never whole), it runs in child processes and reports the peak resident memory
(GNU ``time``, :func:`bench_infer.child_peak`) and wall time of:

- ``pandafine infer --block`` for the top-left block (two sides on the region's border) and for an
  inner block (``r001c001``: its halo on all four sides);
- ``pandafine assemble`` of all the region's blocks into the product COG.

and prints each job's large/small ratio. The model is a small random-initialized UNet (memory is
set by tiles, bands and block widths, not by the model's cost).

``--assemble-only`` skips the cube, the model and ``infer``: each block's GeoTIFF is written
directly, window by window, as ``pandafine infer --block`` writes it (:func:`tiled_profile`, the
``radiance`` band with its description, unit and tags, :func:`product_tags`), holding a smooth
closed-form float32 radiance with a NaN disc; then only ``pandafine assemble`` is measured, so
products above :data:`pandafine.product.cog.IN_MEMORY_BYTES` (rio-cogeo's on-disk path) are cheap
to reach, e.g. ``--block 2560 --sizes 4 8`` (10240^2 px = 400 MiB and 20480^2 px = 1.6 GiB of
float32). Each product is checked to be a valid COG whose pixels equal the blocks'. Not collected
by pytest.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import (  # noqa: E402  (benchmarks share their helpers)
    REPO,
    YEAR,
    build_net,
    child_peak,
    export,
    rss_model_config,
    synthetic_inputs,
    write_cube,
)


def radiance_field(rows: np.ndarray, cols: np.ndarray, side: int) -> np.ndarray:
    """Smooth synthetic radiance (float32) at grid pixels ``rows`` x ``cols`` (broadcast) of a
    ``side`` x ``side`` region: positive waves, NaN in a disc (nodata, e.g. sea) across blocks."""
    r, c = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
    value = (3.0 + 1.5 * np.sin(2 * np.pi * c / 1900.0) * np.cos(2 * np.pi * r / 2300.0)
             + 0.8 * np.sin(2 * np.pi * (r + c) / 5300.0) + 2e-4 * (r - c))
    value = np.where((r - 0.6 * side) ** 2 + (c - 0.3 * side) ** 2 < (0.15 * side) ** 2, np.nan, value)
    return value.astype(np.float32)


def write_block(path: Path, grid, b, side: int, tags: dict[str, str]) -> None:
    """Write block ``b`` of ``grid`` as ``pandafine infer --block`` does, one row of internal tiles at a time."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from pandafine.core.scaling import RADIANCE_UNITS
    from pandafine.product.cog import PRODUCT_BANDS, tiled_blocksize, tiled_profile

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = tiled_profile(b.height, b.width, 1, CRS.from_user_input(grid.crs),
                            grid.window_transform(b.row_off, b.col_off))
    step = tiled_blocksize(b.height, b.width) or 256
    cols = np.arange(b.col_off, b.col_off + b.width)[None, :]
    with rasterio.open(path, "w", **profile) as dst:
        for i, name in enumerate(PRODUCT_BANDS[:1], start=1):
            dst.set_band_description(i, name)
            dst.set_band_unit(i, RADIANCE_UNITS)
            dst.update_tags(i, units=RADIANCE_UNITS, quantity=name)
        dst.update_tags(**tags)
        for r0 in range(0, b.height, step):
            n = min(step, b.height - r0)
            rows = np.arange(b.row_off + r0, b.row_off + r0 + n)[:, None]
            dst.write(radiance_field(rows, cols, side), 1, window=Window(0, r0, b.width, n))


def check_product(product: Path, blocks_dir: Path, grid, block: int, side: int) -> None:
    """The product is a valid COG, and a few of its pixels equal the blocks' (and the closed form)."""
    import rasterio
    from rasterio.windows import Window

    from pandafine.core.blocks import grid_blocks
    from pandafine.product.cog import validate_cog

    ok, errors, warns = validate_cog(product)
    if not ok:
        raise RuntimeError(f"{product}: not a valid COG: {errors} {warns}")
    rng = np.random.default_rng(side)
    points = [(0, 0), (side - 1, side - 1), (int(0.6 * side), int(0.3 * side)),  # the last one in the NaN disc
              *map(tuple, rng.integers(0, side, (5, 2)))]
    blocks = grid_blocks(grid, block)
    values = []
    with rasterio.open(product) as dst:
        if (dst.height, dst.width) != (side, side) or dst.count != 1:
            raise RuntimeError(f"{product}: {dst.count} band(s) of {dst.height}x{dst.width}, expected 1 of {side}^2")
        for r, c in points:
            b = next(b for b in blocks
                     if b.row_off <= r < b.row_off + b.height and b.col_off <= c < b.col_off + b.width)
            with rasterio.open(blocks_dir / f"{b.name}.tif") as src:
                want = src.read(1, window=Window(c - b.col_off, r - b.row_off, 1, 1))[0, 0]
            got = dst.read(1, window=Window(c, r, 1, 1))[0, 0]
            formula = radiance_field(np.array(r), np.array(c), side)
            if not (np.array_equal(got, want, equal_nan=True) and np.allclose(got, formula, rtol=1e-6, equal_nan=True)):
                raise RuntimeError(f"{product}: pixel ({r}, {c}) is {got}, block {b.name} has {want}, "
                                   f"closed form {formula}")
            values.append(got)
    if not np.isnan(values[2]) or np.isnan(values[:2]).any():
        raise RuntimeError(f"{product}: expected NaN only in the disc, got {values[:3]} at {points[:3]}")


def assemble_only(args, config: Path, work: Path) -> None:
    """Write each block's GeoTIFF directly and measure ``pandafine assemble`` at each region size."""
    from bench_preprocess import bench_grid  # the benchmarks' directory is on sys.path (above)

    from pandafine.config import load_config
    from pandafine.core.blocks import grid_blocks
    from pandafine.product.cog import IN_MEMORY_BYTES, product_tags

    cfg = load_config(config)
    model = work / "model.onnx"  # a stand-in: only its sha256 goes into the tags
    model.write_bytes(b"bench_blocks --assemble-only: no model")
    tags = {**product_tags(cfg, YEAR, model),
            "input_sha256": hashlib.sha256(b"bench_blocks synthetic cube").hexdigest()}
    base = [sys.executable, "-m", "pandafine"]
    rows = []
    for k in args.sizes:
        side = k * args.block
        grid = bench_grid(cfg, side)
        grid_json = work / f"grid_{side}.json"
        grid.write_json(grid_json)
        out = work / f"blocks_{side}"
        t0 = time.perf_counter()
        for b in grid_blocks(grid, args.block):
            write_block(out / f"{b.name}.tif", grid, b, side, tags)
        written = time.perf_counter() - t0
        blocks_mib = sum(p.stat().st_size for p in out.glob("*.tif")) / 2**20
        product = work / f"product_{side}" / f"PANDA-FINE_{YEAR}.tif"
        rss, wall = child_peak(base + ["assemble", "--config", str(config), "--blocks",
                                       *map(str, sorted(out.glob("*.tif"))), "--grid", str(grid_json),
                                       "--output", str(product)])
        check_product(product, out, grid, args.block, side)
        nbytes = side * side * 4
        rows.append((k, side, nbytes / 2**20, "in-memory" if nbytes <= IN_MEMORY_BYTES else "on-disk", rss, wall))
        print(f"# {k}x{k} blocks ({side}^2 px): blocks written in {written:.1f} s ({blocks_mib:.0f} MiB on disk), "
              f"assemble {rss:.0f} MiB {wall:.1f} s, product {product.stat().st_size / 2**20:.0f} MiB; valid COG, "
              "pixels match", flush=True)
        if args.keep is None:
            shutil.rmtree(out)
            shutil.rmtree(product.parent)
    print(f"\npandafine assemble, block {args.block} px; rio-cogeo in memory up to {IN_MEMORY_BYTES / 2**20:.0f} MiB")
    print(f"{'blocks/side':>11} {'product px':>12} {'MiB (f32)':>10} {'COG path':>10} {'peak RSS MiB':>13} "
          f"{'wall s':>7}")
    for k, side, mib, path, rss, wall in rows:
        print(f"{k:>11} {f'{side}^2':>12} {mib:>10.0f} {path:>10} {rss:>13.0f} {wall:>7.1f}")
    (k1, *_, m1, _), (k2, *_, m2, _) = rows[0], rows[-1]
    print(f"RSS ratio {k2}x{k2} / {k1}x{k1} blocks ({(k2 / k1) ** 2:.0f}x the area): {m2 / m1:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-model", default="unet:4:1")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
    ap.add_argument("--sizes", type=int, nargs=2, default=(2, 4), metavar=("K1", "K2"),
                    help="blocks per side of the small and the large region")
    ap.add_argument("--assemble-only", action="store_true",
                    help="write the blocks' GeoTIFFs directly (no cube, model or infer); measure only assemble")
    args = ap.parse_args()

    from pandafine.core.blocks import grid_blocks
    from pandafine.core.channels import CHANNELS
    from pandafine.tiles.cube import open_cube

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["model"] = rss_model_config(cfg, args.rss_model)
    cfg["infer"]["providers"] = ["CPUExecutionProvider"]
    cfg["grid"]["block"] = args.block
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_blocks."))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    if args.assemble_only:
        try:
            assemble_only(args, config, work)
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
        return
    n, tile = len(CHANNELS), int(cfg["infer"]["tile"])
    example = synthetic_inputs(n, tile, tile)
    net = build_net(cfg["model"], n, np.nanmean(example, axis=(1, 2)), np.nanstd(example, axis=(1, 2)))
    model = export(net, example[None].repeat(2, axis=0), work / "model.onnx")
    base = [sys.executable, "-m", "pandafine"]
    rows = {}
    try:
        for k in args.sizes:
            side = k * args.block
            cube = write_cube(work / f"cube_{side}" / f"{YEAR}.zarr", side, n, int(cfg["tiles"]["chunk"]))
            grid = open_cube(cube).grid
            grid_json = work / f"grid_{side}.json"
            grid.write_json(grid_json)
            out = work / f"blocks_{side}"
            row = {}
            for b in grid_blocks(grid, args.block):
                cmd = base + ["infer", "--config", str(config), "--threads", str(args.threads), "--year", str(YEAR),
                              "--block", b.name, "--cube", str(cube), "--model", str(model),
                              "--output", str(out / f"{b.name}.tif")]
                if b.name in ("r000c000", "r001c001"):
                    row[f"infer {b.name}"] = child_peak(cmd)
                else:  # the other blocks only need to exist for the assembly
                    subprocess.run(cmd, check=True, capture_output=True)
            product = work / f"product_{side}" / f"PANDA-FINE_{YEAR}.tif"
            row["assemble"] = child_peak(base + ["assemble", "--config", str(config), "--blocks",
                                                 *map(str, sorted(out.glob("*.tif"))), "--grid", str(grid_json),
                                                 "--output", str(product)])
            rows[side] = row
            print(f"# {k}x{k} blocks ({side}^2 px): " + ", ".join(f"{j} {m:.0f} MiB {s:.1f} s"
                                                                for j, (m, s) in row.items()), flush=True)
            shutil.rmtree(cube.parent)
        (k1, k2), (small, large) = args.sizes, (rows[k * args.block] for k in args.sizes)
        print(f"\nblock {args.block} px, {args.threads} threads, model {args.rss_model}; peak RSS (MiB) and wall (s)")
        print(f"{'job':<18} {f'{k1}x{k1} blocks':>16} {f'{k2}x{k2} blocks':>16} {'RSS ratio':>9}")
        for job in small:
            (m1, s1), (m2, s2) = small[job], large[job]
            print(f"{job:<18} {m1:>8.0f} {s1:>6.1f} s {m2:>8.0f} {s2:>6.1f} s {m2 / m1:>9.3f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
