"""Spatial blocks: peak memory of a block's jobs does not grow with the region.

Usage::

    python tests/benchmarks/bench_blocks.py [--block 1024] [--threads 2] [--rss-model unet:4:1] [--keep DIR]

For a synthetic square region of 2 x 2 blocks and one of 4 x 4 blocks (4x the area, same
``grid.block``), each written as an inference cube on disk (band by band, never whole), it runs
in child processes and reports the peak resident memory (GNU ``time``, :func:`bench_infer.child_peak`) and wall
time of:

- ``pandafine infer --block`` for the top-left block (two sides on the region's border) and for an
  inner block (``r001c001``: its halo on all four sides);
- ``pandafine assemble`` of all the region's blocks into the product COG.

and prints each job's large/small ratio. The model is a small random-initialized UNet (memory is
set by tiles, bands and block widths, not by the model's cost). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-model", default="unet:4:1")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
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
    n, tile = len(CHANNELS), int(cfg["infer"]["tile"])
    example = synthetic_inputs(n, tile, tile)
    net = build_net(cfg["model"], n, np.nanmean(example, axis=(1, 2)), np.nanstd(example, axis=(1, 2)))
    model = export(net, example[None].repeat(2, axis=0), work / "model.onnx")
    base = [sys.executable, "-m", "pandafine"]
    rows = {}
    try:
        for k in (2, 4):
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
        small, large = (rows[k * args.block] for k in (2, 4))
        print(f"\nblock {args.block} px, {args.threads} threads, model {args.rss_model}; peak RSS (MiB) and wall (s)")
        print(f"{'job':<18} {'2x2 blocks':>16} {'4x4 blocks':>16} {'RSS ratio':>9}")
        for job in small:
            (m1, s1), (m2, s2) = small[job], large[job]
            print(f"{job:<18} {m1:>8.0f} {s1:>6.1f} s {m2:>8.0f} {s2:>6.1f} s {m2 / m1:>9.3f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
