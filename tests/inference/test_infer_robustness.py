"""Robustness of ``pandafine infer`` as a process: killed midway and rerun, corrupt cubes.

Runs the real command line (``python -m pandafine infer``) in subprocesses on
tiny synthetic cubes and ONNX models built with the helpers of ``test_infer``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fake_cubes import smooth_model, write_cube
from repo_paths import REPO

YEAR = 2018
#: Side of the cube that is killed midway: big enough that tiling takes a few seconds on 2 cores.
BIG = 1536


def write_config(path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["infer"].update(tile=128, overlap=64, window="hann", batch_size=4, providers=["CPUExecutionProvider"])
    cfg["product"].update(compress="zstd", blocksize=256)
    path.write_text(yaml.safe_dump(cfg))
    return path


def infer_cmd(config: Path, cube: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pandafine", "infer", "--config", str(config), "--threads", "1",
            "--year", str(YEAR), "--cube", str(cube), "--model", str(model), "--output", str(out)]


def run_infer(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run(infer_cmd(*args), capture_output=True, text=True, timeout=300)


def temporaries(out: Path) -> set[str]:
    """Hidden temporary files of ``out``'s product in its directory."""
    return {p.name for p in out.parent.glob(f".{out.stem}.*") if ".part" in p.name}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    rng = np.random.default_rng(11)
    big = rng.uniform(0, 5, size=(3, BIG, BIG)).astype(np.float32)
    big[0, 100:300, 200:900] = np.nan
    small = rng.uniform(0, 5, size=(3, 256, 256)).astype(np.float32)
    return {
        "config": write_config(d / "config.yaml"),
        "model": smooth_model(d / "model.onnx"),
        "big": write_cube(d / "big" / f"{YEAR}.zarr", big, year=YEAR, chunk=256),
        "small": write_cube(d / "small" / f"{YEAR}.zarr", small, year=YEAR, chunk=64),
    }


@pytest.mark.slow
def test_killed_run_leaves_no_product_and_rerun_is_identical(tmp_path, setup):
    from pandafine.product.cog import validate_cog

    cfg, model, cube = setup["config"], setup["model"], setup["big"]
    ref = tmp_path / "ref" / f"PANDA-FINE_{YEAR}.tif"
    done = run_infer(cfg, cube, model, ref)
    assert done.returncode == 0, done.stderr
    assert validate_cog(ref)[0]

    out = tmp_path / "run" / f"PANDA-FINE_{YEAR}.tif"
    proc = subprocess.Popen(infer_cmd(cfg, cube, model, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not temporaries(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until the run is writing its temporary GeoTIFF
        time.sleep(0.5)       # ... and has written part of it
        assert proc.poll() is None, "inference finished before it could be killed; enlarge the cube"
        assert not out.exists()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

    # nothing at the product path; only hidden temporaries (a killed process cannot remove them)
    assert not out.exists()
    left = temporaries(out)
    assert left, "the killed run was expected to be midway through writing its temporary file"
    assert {p.name for p in out.parent.iterdir()} == left

    again = run_infer(cfg, cube, model, out)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert temporaries(out) <= left  # the rerun leaves nothing new behind
    # stale temporaries are cleaned when a run starts (product.cog.tiled_temporary)
    assert temporaries(out) == set()
    assert "stale temporary" in again.stderr


def _corrupt_group_json(cube: Path) -> None:
    (cube / "zarr.json").write_text("{not json")


def _corrupt_array_json(cube: Path) -> None:
    (cube / "inputs" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"')


def _truncate_chunk(cube: Path) -> None:
    chunk = cube / "inputs" / "c" / "0" / "2" / "1"  # rows 128:192: fails after the first tile rows are done
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("corrupt", [_corrupt_group_json, _corrupt_array_json, _truncate_chunk],
                         ids=["group-zarr-json", "array-zarr-json", "truncated-chunk"])
def test_corrupt_cube_fails_naming_the_cube(tmp_path, setup, corrupt):
    cube = tmp_path / f"{YEAR}.zarr"
    shutil.copytree(setup["small"], cube)
    corrupt(cube)
    out = tmp_path / "out" / f"PANDA-FINE_{YEAR}.tif"
    res = run_infer(setup["config"], cube, setup["model"], out)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert str(cube) in last and "error" in last, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_small_cube_runs(tmp_path, setup):
    """Control for the corruption cases: the uncorrupted copy of the small cube infers fine."""
    cube = tmp_path / f"{YEAR}.zarr"
    shutil.copytree(setup["small"], cube)
    out = tmp_path / "out" / f"PANDA-FINE_{YEAR}.tif"
    res = run_infer(setup["config"], cube, setup["model"], out)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and os.listdir(out.parent) == [out.name]
