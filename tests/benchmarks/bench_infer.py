"""Inference benchmarks: onnxruntime vs PyTorch eager throughput, and peak memory of ``pandafine infer``.

Usage::

    python tests/benchmarks/bench_infer.py [--quick] [--threads N] [--device cpu|cuda] [--json OUT]

1. Throughput (megapixels of output per second) of the same weights (the
   configured UNet, random init, seeded) through the same tiling and blending
   code path (:func:`pandafine.infer.infer_array`): once with an onnxruntime
   session of the exported ONNX graph, once with a PyTorch eager adapter that
   offers the session's ``run`` interface. Overlaps 0, 0.25 and 0.5; the ratio
   ORT/PyTorch is measured within this one run. Outputs of both are compared.
2. Peak resident memory (``ru_maxrss`` of the child, via ``os.wait4``) of
   ``python -m pandafine infer`` on a small and a 16x larger cube (4000² and
   16000² px; ``--quick``: 512² and 1024²), with the ratio:
   streaming inference should stay far below the 16x pixel ratio.

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAPS = (0.0, 0.25, 0.5)
#: (throughput region side, RSS small side, RSS large side) in pixels.
SIZES = {"full": (1024, 4000, 16000), "quick": (256, 512, 1024)}
YEAR = 2018


def load_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def synthetic_inputs(n_channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random (C, H, W) float32 channels with a NaN patch in channel 0 (PANDA nodata)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = np.empty((n_channels, height, width), np.float32)
    for c in range(n_channels):
        out[c] = gaussian_filter(rng.normal(size=(height, width)).astype(np.float32), 3) * 10 + c
    out[0, : height // 10, : width // 10] = np.nan
    return out


def build_net(cfg: dict, n_channels: int, mean, std):
    """The configured model (seeded random weights) wrapped raw-channels-to-radiance, in eval mode."""
    import torch

    from pandafine.models import build_model
    from pandafine.models.wrapper import PandaFineNet

    torch.manual_seed(0)
    return PandaFineNet(build_model(cfg["model"], n_channels), mean, std).eval()


def export(net, example: np.ndarray, path: Path) -> Path:
    """Export with the project's exporter (dynamic batch/height/width, opset 18)."""
    from pandafine.export import _export_graph

    _export_graph(net, np.ascontiguousarray(example), path, 18)
    return path


class TorchSession:
    """PyTorch eager model behind onnxruntime's ``run(output_names, feeds)`` interface."""

    def __init__(self, net, device: str = "cpu") -> None:
        self.net = net.to(device)
        self.device = device

    def run(self, output_names, feeds):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feeds["inputs"])).to(self.device)
        with torch.inference_mode():
            y = self.net(x)
        if self.device != "cpu":
            torch.cuda.synchronize()
        return [y.cpu().numpy()]


def timed(fn, repeat: int) -> tuple[float, object]:
    """Best wall time over ``repeat`` calls, and the last result."""
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def bench_throughput(cfg: dict, side: int, threads: int, device: str, providers: list[str], repeat: int,
                     workdir: Path) -> list[dict]:
    from pandafine.channels import CHANNELS
    from pandafine.infer import InferParams, infer_array
    from pandafine.providers import make_session
    from pandafine.runtime import configure_torch, limit_threads

    limit_threads(threads)
    configure_torch()
    data = synthetic_inputs(len(CHANNELS), side, side)
    mean = np.nanmean(data, axis=(1, 2))
    std = np.nanstd(data, axis=(1, 2))
    net = build_net(cfg, len(CHANNELS), mean, std)
    tile = int(cfg["infer"]["tile"])
    onnx_path = export(net, data[None, :, :tile, :tile].repeat(2, axis=0), workdir / "model.onnx")
    ort = make_session(onnx_path, providers, threads)
    pt = TorchSession(net, device)
    rows = []
    for overlap in OVERLAPS:
        params = InferParams(tile, overlap, str(cfg["infer"]["window"]), int(cfg["infer"]["batch_size"]),
                             tuple(providers))
        infer_array(ort, data[:, :tile, :tile], params)  # warm-up (allocations, kernels)
        infer_array(pt, data[:, :tile, :tile], params)
        t_ort, y_ort = timed(lambda: infer_array(ort, data, params), repeat)
        t_pt, y_pt = timed(lambda: infer_array(pt, data, params), repeat)
        mp = side * side / 1e6
        peak = float(np.nanmax(np.abs(y_pt))) or 1.0
        rows.append({
            "overlap": overlap, "region_px": [side, side], "tile": tile, "batch": params.batch_size,
            "ort_s": t_ort, "torch_s": t_pt, "ort_mpix_s": mp / t_ort, "torch_mpix_s": mp / t_pt,
            "ort_over_torch": t_pt / t_ort,
            "max_rel_diff": float(np.nanmax(np.abs(y_ort - y_pt))) / peak,
        })
    return rows


def write_cube(path: Path, side: int, n_channels: int, chunk: int) -> Path:
    """A (C, side, side) cube written band by band (the benchmark process never holds it whole)."""
    import zarr
    from affine import Affine

    from pandafine.channels import CHANNELS
    from pandafine.grid import Grid

    grid = Grid("EPSG:32649", Affine(125.0, 0, 300000.0, 0, -125.0, 3800000.0), side, side, 8)
    group = zarr.open_group(str(path), mode="w")
    arr = group.create_array("inputs", shape=(n_channels, side, side), dtype="float32",
                             chunks=(n_channels, chunk, chunk), fill_value=np.nan)
    band = synthetic_inputs(n_channels, chunk, side, seed=1)
    for r in range(0, side, chunk):
        h = min(chunk, side - r)
        arr[:, r:r + h] = band[:, :h]
    group.attrs.update(channels=list(CHANNELS), year=YEAR, grid=grid.to_dict())
    return path


def peak_rss_of_infer(config: Path, cube: Path, model: Path, out: Path, threads: int) -> tuple[float, float]:
    """Run ``python -m pandafine infer`` and return (peak RSS in MiB, wall seconds) of that child alone."""
    cmd = [sys.executable, "-m", "pandafine", "infer", "--config", str(config), "--threads", str(threads),
           "--year", str(YEAR), "--cube", str(cube), "--model", str(model), "--output", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return usage.ru_maxrss / 1024, wall  # Linux: kilobytes


def bench_rss(cfg: dict, sides: tuple[int, int], threads: int, providers: list[str], workdir: Path) -> list[dict]:
    from pandafine.channels import CHANNELS

    cfg = dict(cfg, infer=dict(cfg["infer"], providers=providers))
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    model = workdir / "model.onnx"
    rows = []
    for side in sides:
        cube = write_cube(workdir / f"cube_{side}" / f"{YEAR}.zarr", side, len(CHANNELS),
                          int(cfg["tiles"]["chunk"]))
        rss, wall = peak_rss_of_infer(config, cube, model, workdir / f"out_{side}" / f"PANDA-FINE_{YEAR}.tif",
                                      threads)
        rows.append({"side": side, "megapixels": side * side / 1e6, "peak_rss_mib": rss, "wall_s": wall})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 min on 2 CPU cores)")
    ap.add_argument("--threads", type=int, default=1, help="threads for onnxruntime, PyTorch and infer")
    ap.add_argument("--device", default="cpu", help="PyTorch device (cpu, cuda)")
    ap.add_argument("--providers", nargs="+", default=None,
                    help="onnxruntime providers (default: CUDA then CPU for --device cuda, else CPU)")
    ap.add_argument("--repeat", type=int, default=None, help="timing repeats, best kept (default 1 quick, 3)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    providers = args.providers or (["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device.startswith("cuda")
                                   else ["CPUExecutionProvider"])
    side, rss_small, rss_large = SIZES["quick" if args.quick else "full"]
    repeat = args.repeat or (1 if args.quick else 3)
    cfg = load_config()
    from pandafine.channels import CHANNELS

    n_channels = len(CHANNELS)
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        thr = bench_throughput(cfg, side, args.threads, args.device, providers, repeat, workdir)
        print(f"# throughput: {side}x{side} px, tile {thr[0]['tile']}, batch {thr[0]['batch']}, "
              f"threads {args.threads}, torch device {args.device}, ORT {providers}, best of {repeat}")
        print(f"{'overlap':>8} {'ORT MP/s':>9} {'torch MP/s':>10} {'ORT/torch':>9} {'max rel diff':>12}")
        for r in thr:
            print(f"{r['overlap']:>8.2f} {r['ort_mpix_s']:>9.3f} {r['torch_mpix_s']:>10.3f} "
                  f"{r['ort_over_torch']:>9.2f} {r['max_rel_diff']:>12.2e}")
        rss = bench_rss(cfg, (rss_small, rss_large), args.threads, providers, workdir)
        print(f"# peak RSS of `pandafine infer` (tile {cfg['infer']['tile']}, overlap {cfg['infer']['overlap']}, "
              f"{n_channels} channels, threads {args.threads})")
        print(f"{'side':>7} {'MP':>7} {'peak RSS MiB':>12} {'wall s':>7}")
        for r in rss:
            print(f"{r['side']:>7} {r['megapixels']:>7.2f} {r['peak_rss_mib']:>12.1f} {r['wall_s']:>7.1f}")
        ratio = rss[1]["peak_rss_mib"] / rss[0]["peak_rss_mib"]
        px_ratio = rss[1]["megapixels"] / rss[0]["megapixels"]
        print(f"peak RSS ratio {rss_large}²/{rss_small}²: {ratio:.2f} for {px_ratio:.0f}x the pixels")
        print(f"# total {time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"throughput": thr, "rss": rss, "rss_ratio": ratio,
                                         "pixel_ratio": px_ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
