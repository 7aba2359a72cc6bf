"""Inference benchmarks: onnxruntime vs PyTorch eager throughput, and peak memory of ``pandafine infer``.

Usage::

    python tests/benchmarks/bench_infer.py [--quick] [--side N] [--threads N] [--repeat N] [--iobinding]
                                           [--device cpu|cuda] [--no-rss] [--json OUT]
    python tests/benchmarks/bench_infer.py --rss 4000,16000 [--threads N] [--rss-model unet:4:1|tiny|config]

1. Throughput (megapixels of output per second) of the same weights (the
   configured UNet, random init, seeded) through the same tiling and blending
   code path (:func:`pandafine.inference.infer.infer_array`, so both see the same tiles and
   batches): an onnxruntime session of the exported ONNX graph against a PyTorch
   eager adapter offering the session's ``run`` interface, with the same number of
   threads. Overlaps 0, 0.25 and 0.5. Each engine first makes one full untimed
   pass (allocations, kernel selection); then the timed passes alternate ORT,
   torch, ORT, torch, ... so that both see the same machine load. Medians and
   best times are printed, and ORT/torch as the ratio of the medians and of every
   interleaved pair. ``--iobinding`` adds the IO-bound ORT path
   (:class:`pandafine.inference.ort_run.BoundSession`, on the torch device). Outputs are compared.
2. Peak resident memory (GNU ``time``'s ``%M`` of the child: :func:`child_peak`) of
   ``python -m pandafine infer`` (the real ``infer_year`` path: Zarr cube on disk ->
   streamed COG), one child process per region size. Each cube is written on disk
   band by band (the benchmark never holds it whole) and removed after its run.
   The model is a small UNet (width 4, depth 1; ``--rss-model`` picks another):
   memory is set by tiles, batches and bands, not by the model's cost, and a small
   model keeps a 16000² region within minutes on 2 cores. Sizes: 512² and 1024² with
   ``--quick``, 4000² and 16000² otherwise, or those given to ``--rss``.

Not collected by pytest (``--ignore=tests/benchmarks`` in pyproject).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAPS = (0.0, 0.25, 0.5)  # fractions of the tile, turned into pixels
#: (throughput region side, RSS small side, RSS large side) in pixels.
SIZES = {"full": (1024, 4000, 16000), "quick": (256, 512, 1024)}
YEAR = 2018


def load_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def synthetic_inputs(n_channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random (C, H, W) float32 channels with a NaN patch in channel 0 (PANDA nodata).

    Values are rounded to 1/64 (like quantized reflectances), which keeps the
    compressed cubes of the memory benchmark small on disk.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = np.empty((n_channels, height, width), np.float32)
    for c in range(n_channels):
        out[c] = np.round((gaussian_filter(rng.normal(size=(height, width)).astype(np.float32), 3) * 10 + c) * 64) / 64
    out[0, : height // 10, : width // 10] = np.nan
    return out


def build_net(model_cfg: dict, n_channels: int, mean, std):
    """The model of ``model_cfg`` (seeded random weights) wrapped raw-channels-to-radiance, in eval mode."""
    import torch

    from pandafine.models.registry import build_model
    from pandafine.models.wrapper import PandaFineNet

    torch.manual_seed(0)
    return PandaFineNet(build_model(model_cfg, n_channels), mean, std).eval()


def export(net, example: np.ndarray, path: Path) -> Path:
    """Export with the project's exporter (dynamic batch/height/width, opset 18)."""
    from pandafine.training.export import _export_graph

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


def interleaved(fns: dict, repeat: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """One untimed pass of every function, then ``repeat`` rounds timing each in turn.

    Returns the wall times per name (in round order) and each function's last result.
    """
    results = {name: fn() for name, fn in fns.items()}  # warm-up: the same call as timed
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return times, results


def bench_throughput(cfg: dict, side: int, threads: int, device: str, providers: list[str], repeat: int,
                     workdir: Path, iobinding: bool = False) -> list[dict]:
    from pandafine.core.channels import CHANNELS
    from pandafine.core.runtime import configure_torch, limit_threads
    from pandafine.inference.blending import TileLayout
    from pandafine.inference.infer import InferParams, infer_array
    from pandafine.inference.ort_run import BoundSession
    from pandafine.inference.providers import make_session

    limit_threads(threads)
    configure_torch()
    data = synthetic_inputs(len(CHANNELS), side, side)
    mean = np.nanmean(data, axis=(1, 2))
    std = np.nanstd(data, axis=(1, 2))
    net = build_net(cfg["model"], len(CHANNELS), mean, std)
    tile = int(cfg["infer"]["tile"])
    onnx_path = export(net, data[None, :, :tile, :tile].repeat(2, axis=0), workdir / "model.onnx")
    ort = make_session(onnx_path, providers, threads)
    engines = {"ort": ort, "torch": TorchSession(net, device)}
    if iobinding:
        engines["ort_bound"] = BoundSession(ort, "cuda" if device.startswith("cuda") else "cpu")
    rows = []
    for fraction in OVERLAPS:
        overlap = int(round(tile * fraction))
        params = InferParams(tile, overlap, str(cfg["infer"]["window"]), int(cfg["infer"]["batch_size"]),
                             tuple(providers))
        layout = TileLayout(side, side, tile, overlap, params.window)
        times, outs = interleaved({k: (lambda s=s: infer_array(s, data, params)) for k, s in engines.items()},
                                  repeat)
        mp = side * side / 1e6
        peak = float(np.nanmax(np.abs(outs["torch"]))) or 1.0
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "overlap": overlap, "region_px": [side, side], "tile": tile, "batch": params.batch_size,
            "tiles": len(layout.rows) * len(layout.cols), "threads": threads, "repeat": repeat,
            "times_s": times, "median_s": med, "best_s": {k: min(v) for k, v in times.items()},
            "mpix_s": {k: mp / v for k, v in med.items()},
            "ort_over_torch": med["torch"] / med["ort"],
            "ort_over_torch_pairs": [t / o for o, t in zip(times["ort"], times["torch"])],
            "max_rel_diff": float(np.nanmax(np.abs(outs["ort"] - outs["torch"]))) / peak,
        }
        if iobinding:
            row["bound_over_plain"] = med["ort"] / med["ort_bound"]
            row["bound_max_abs_diff"] = float(np.nanmax(np.abs(outs["ort_bound"] - outs["ort"])))
        rows.append(row)
    return rows


def write_cube(path: Path, side: int, n_channels: int, chunk: int) -> Path:
    """A (C, side, side) cube written one band of chunk rows at a time (never held whole)."""
    import zarr
    from affine import Affine

    from pandafine.core.channels import CHANNELS
    from pandafine.core.grid import Grid

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


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def measured_run(cmd: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MiB, wall seconds, stdout) of one command; RuntimeError with its stderr if it fails.

    The command runs under GNU ``time`` (``%M``): Linux keeps a process's peak RSS across
    ``fork`` + ``exec``, so a child forked straight from a (large) benchmark process would
    report that process's peak instead of its own; ``time`` is small.
    """
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    kb = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("MAXRSS_KB ")][-1]
    return int(kb) / 1024, wall, proc.stdout


def child_peak(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one command (:func:`measured_run`)."""
    return measured_run(cmd)[:2]


def peak_rss_of_infer(config: Path, cube: Path, model: Path, out: Path, threads: int) -> tuple[float, float]:
    """Run ``python -m pandafine infer`` and return (peak RSS in MiB, wall seconds) of that child alone."""
    return child_peak([sys.executable, "-m", "pandafine", "infer", "--config", str(config), "--threads", str(threads),
                       "--year", str(YEAR), "--cube", str(cube), "--model", str(model), "--output", str(out)])


def rss_model_config(cfg: dict, which: str) -> dict:
    """The model section for the memory runs: ``config`` (config.yaml's), ``tiny`` (tests/data/tiny.yaml's)
    or ``unet:WIDTH:DEPTH``."""
    if which == "config":
        return dict(cfg["model"])
    if which == "tiny":
        return dict(yaml.safe_load((REPO / "tests" / "data" / "tiny.yaml").read_text())["model"])
    name, width, depth = which.split(":")
    if name != "unet":
        raise ValueError(f"--rss-model {which!r}: expected config, tiny or unet:WIDTH:DEPTH")
    return {"name": "unet", "width": int(width), "depth": int(depth)}


def bench_rss(cfg: dict, sides, threads: int, providers: list[str], workdir: Path, model_cfg: dict,
              overlap: int | None = None) -> list[dict]:
    from pandafine.core.channels import CHANNELS

    n = len(CHANNELS)
    infer = dict(cfg["infer"], providers=providers)
    if overlap is not None:
        infer["overlap"] = overlap
    cfg = dict(cfg, model=model_cfg, infer=infer)
    config = workdir / "rss_config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    tile = int(cfg["infer"]["tile"])
    example = synthetic_inputs(n, tile, tile)
    net = build_net(model_cfg, n, np.nanmean(example, axis=(1, 2)), np.nanstd(example, axis=(1, 2)))
    head = getattr(net.net, "head", None)
    if head is not None and head.bias is not None:  # random weights give z < 0 (radiance 0) nearly everywhere;
        import torch  # a positive bias makes a non-trivial product to compress

        with torch.no_grad():
            head.bias.add_(1.0)
    model = export(net, example[None].repeat(2, axis=0), workdir / "rss_model.onnx")
    rows = []
    for side in sides:
        t0 = time.perf_counter()
        cube = write_cube(workdir / f"cube_{side}" / f"{YEAR}.zarr", side, n, int(cfg["tiles"]["chunk"]))
        t_cube = time.perf_counter() - t0
        out = workdir / f"out_{side}" / f"PANDA-FINE_{YEAR}.tif"
        rss, wall = peak_rss_of_infer(config, cube, model, out, threads)
        rows.append({"side": side, "megapixels": side * side / 1e6, "peak_rss_mib": rss, "wall_s": wall,
                     "cube_mib_on_disk": disk_mib(cube.parent), "cube_write_s": t_cube,
                     "cog_mib": out.stat().st_size / 2**20})
        print(f"# done: {rows[-1]}", flush=True)  # partial results survive an interrupted run
        shutil.rmtree(cube.parent)
        shutil.rmtree(out.parent)
    return rows


def print_throughput(thr: list[dict], device: str, providers: list[str]) -> None:
    r0 = thr[0]
    print(f"# throughput: {r0['region_px'][0]}x{r0['region_px'][1]} px, tile {r0['tile']}, batch {r0['batch']}, "
          f"threads {r0['threads']}, torch device {device}, ORT {providers}; warm-up pass, then "
          f"{r0['repeat']} interleaved timed passes, medians (best)")
    names = list(r0["median_s"])
    print(f"{'overlap':>7} {'tiles':>5} " + " ".join(f"{k + ' MP/s':>16}" for k in names)
          + f" {'ORT/torch':>9} {'per pair':>22} {'max rel diff':>12}")
    for r in thr:
        mp = r["region_px"][0] * r["region_px"][1] / 1e6
        cells = " ".join(f"{r['mpix_s'][k]:>7.3f} ({mp / r['best_s'][k]:>6.3f})" for k in names)
        pairs = ",".join(f"{x:.2f}" for x in r["ort_over_torch_pairs"])
        print(f"{r['overlap']:>7d} {r['tiles']:>5} {cells} {r['ort_over_torch']:>9.2f} {pairs:>22} "
              f"{r['max_rel_diff']:>12.2e}")
        if "bound_over_plain" in r:
            print(f"        IO-bound ORT / plain ORT: {r['bound_over_plain']:.2f} "
                  f"(max abs diff {r['bound_max_abs_diff']:.1e})")


def print_rss(rss: list[dict], cfg: dict, model_cfg: dict, threads: int) -> dict:
    print(f"# peak RSS of `pandafine infer` (tile {cfg['infer']['tile']}, overlap {cfg['infer']['overlap']}, "
          f"batch {cfg['infer']['batch_size']}, model {model_cfg}, threads {threads})")
    print(f"{'side':>7} {'MP':>7} {'peak RSS MiB':>12} {'infer wall s':>12} {'cube MiB':>9} {'cube write s':>12} "
          f"{'COG MiB':>8}")
    for r in rss:
        print(f"{r['side']:>7} {r['megapixels']:>7.2f} {r['peak_rss_mib']:>12.1f} {r['wall_s']:>12.1f} "
              f"{r['cube_mib_on_disk']:>9.0f} {r['cube_write_s']:>12.1f} {r['cog_mib']:>8.1f}")
    summary = {}
    if len(rss) >= 2:
        summary = {"rss_ratio": rss[-1]["peak_rss_mib"] / rss[0]["peak_rss_mib"],
                   "pixel_ratio": rss[-1]["megapixels"] / rss[0]["megapixels"]}
        print(f"peak RSS ratio {rss[-1]['side']}²/{rss[0]['side']}²: {summary['rss_ratio']:.2f} "
              f"for {summary['pixel_ratio']:.0f}x the pixels")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes on 2 CPU cores)")
    ap.add_argument("--side", type=int, help="throughput region side in px (default 256 quick, 1024)")
    ap.add_argument("--threads", type=int, default=1, help="threads for onnxruntime, PyTorch and infer")
    ap.add_argument("--device", default="cpu", help="PyTorch device (cpu, cuda)")
    ap.add_argument("--providers", nargs="+", default=None,
                    help="onnxruntime providers (default: CUDA then CPU for --device cuda, else CPU)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="interleaved timed passes per engine after the warm-up (default 3 quick, 5)")
    ap.add_argument("--iobinding", action="store_true", help="also time the IO-bound onnxruntime path")
    ap.add_argument("--no-rss", action="store_true", help="throughput only")
    ap.add_argument("--rss", type=lambda v: [int(x) for x in v.split(",")], metavar="SIDES",
                    help="memory only, at these region sides (e.g. 4000,16000)")
    ap.add_argument("--rss-model", default="unet:4:1",
                    help="model of the memory runs: unet:WIDTH:DEPTH (default unet:4:1), tiny "
                         "(tests/data/tiny.yaml's) or config (config.yaml's)")
    ap.add_argument("--rss-overlap", type=int, help="overlap (px) of the memory runs (default: config.yaml's)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    providers = args.providers or (["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device.startswith("cuda")
                                   else ["CPUExecutionProvider"])
    side, rss_small, rss_large = SIZES["quick" if args.quick else "full"]
    side = args.side or side
    repeat = args.repeat or (3 if args.quick else 5)
    cfg = load_config()
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        if args.rss is None:
            thr = bench_throughput(cfg, side, args.threads, args.device, providers, repeat, workdir, args.iobinding)
            print_throughput(thr, args.device, providers)
            result["throughput"] = thr
        if not args.no_rss:
            model_cfg = rss_model_config(cfg, args.rss_model)
            rss = bench_rss(cfg, args.rss or (rss_small, rss_large), args.threads, providers, workdir, model_cfg,
                            args.rss_overlap)
            if args.rss_overlap is not None:
                cfg = dict(cfg, infer=dict(cfg["infer"], overlap=args.rss_overlap))
            result.update(rss=rss, **print_rss(rss, cfg, model_cfg, args.threads))
        print(f"# total {time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
