"""Receptive fields of trained models, and the light tiled inference loses at each tile size.

Usage (in a workdir where the demo or benchmark config has run)::

    python tests/benchmarks/bench_receptive_field.py --tiles results/tiles/train.zarr \
        --cube results/tiles/cube/2018.zarr results/models/unet results/ablation/01-baseline

Per model directory (with ``checkpoint.pt``) it prints the receptive field that ``pandafine export``
records (:func:`pandafine.training.export.receptive_field`, with the seconds it took, and the field at
90 %, 99.9 % and 100 % of the gradient mass), then for each ``--tiles-px`` and ``--overlap`` the total
light of the tiled, blended prediction of the cube (PyTorch, ``infer.window`` hann) against a
one-tile prediction, in percent, and the sum of absolute differences over the total light. Tiles
smaller than the receptive field are marked ``refused``.

Nothing is asserted; not collected by pytest.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=Path, required=True, help="train.zarr (test-split patches)")
    ap.add_argument("--cube", type=Path, help="an inference cube; without it only the fields are measured")
    ap.add_argument("--tiles-px", default="16,24,32,48,64,96,128,176", help="tile sides to compare")
    ap.add_argument("--overlap", default="0.25,0.5", help="overlaps to compare (fractions of the tile)")
    ap.add_argument("models", nargs="+", type=Path, help="model directories with checkpoint.pt")
    args = ap.parse_args(argv)

    import torch

    from pandafine.core.runtime import configure_torch
    from pandafine.inference.infer import InferParams, infer_array
    from pandafine.models import input_multiple
    from pandafine.models.receptive_field import RF_SAMPLES, brightest_samples, measure_receptive_field
    from pandafine.models.registry import load_trained_model
    from pandafine.tiles.cube import open_cube
    from pandafine.tiles.store import PatchStore
    from pandafine.training.export import receptive_field

    configure_torch()
    store = PatchStore(args.tiles, memory_limit=0)
    idx = store.indices("test")
    patches, _ = store.read((idx if idx.size else np.arange(len(store)))[:64])
    cube = np.asarray(open_cube(args.cube).inputs[:], np.float32) if args.cube else None

    class TorchSession:  # what infer_array needs of an onnxruntime session
        def __init__(self, model):
            self.model = model

        def run(self, _names, feeds):
            with torch.no_grad():
                return [self.model(torch.from_numpy(feeds["inputs"])).numpy()]

    for model_dir in args.models:
        model, ck = load_trained_model(model_dir)
        multiple = input_multiple(ck["model_config"])
        started = time.perf_counter()
        rf = receptive_field(model, patches, ck["channels"], multiple)
        seconds = time.perf_counter() - started
        pick = brightest_samples(patches, RF_SAMPLES, channel=list(ck["channels"]).index("panda"))
        with torch.no_grad():
            x = model.normalize(torch.from_numpy(patches[pick])).numpy()
        others = {f: measure_receptive_field(model.net, x, fraction=f, multiple=multiple).px
                  for f in (0.9, 0.999, 1.0)}
        print(f"{model_dir}: receptive field {rf.px} px (radius {rf.radius}; {rf.samples} patches, "
              f"{rf.canvas} px canvas, complete {rf.complete}, {seconds:.2f} s); at 90 % {others[0.9]} px, "
              f"99.9 % {others[0.999]} px, 100 % {others[1.0]} px", flush=True)
        if cube is None:
            continue
        session = TorchSession(model)
        h, w = cube.shape[1:]
        step = int(np.lcm(multiple, 8))
        one = -(-max(h, w) // step) * step
        ref = infer_array(session, cube, InferParams(one, 0, "hann", 1, ("CPUExecutionProvider",)))
        valid = np.isfinite(cube[0]) & np.isfinite(ref)
        total = float(ref[valid].sum())
        for overlap in (float(o) for o in args.overlap.split(",")):
            for tile in (int(t) for t in args.tiles_px.split(",")):
                if tile % multiple or tile % 8:
                    continue
                out = infer_array(session, cube, InferParams(tile, round(tile * overlap), "hann", 8, ("CPUExecutionProvider",)))
                loss = 100 * (float(out[valid].sum()) - total) / total
                mad = 100 * float(np.abs(out - ref)[valid].sum()) / total
                shared = round(tile * overlap)
                flag = "refused" if tile < rf.px else ("narrow overlap" if shared < 2 * rf.radius else "")
                print(f"  tile {tile:4d} overlap {overlap:.2f}: total light {loss:+7.2f} %, "
                      f"sum |diff| / total {mad:6.2f} %  {flag}", flush=True)


if __name__ == "__main__":
    main()
