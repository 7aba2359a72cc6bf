"""Shared fixtures: the demo config, a tiny config, tiny rasters on a tiny grid."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from affine import Affine

from pandafine.core.grid import CHINA_ALBERS, Grid
from repo_paths import REALDATA, REPO  # noqa: F401  (REPO: also for tests that take it from here)

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def _run_snakemake(workdir: Path, *args: str, config: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """``snakemake -s <repo>/Snakefile --directory workdir --configfile config *args`` in a subprocess."""
    return subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "--configfile", str(config), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_snakemake():
    """The one way tests run the workflow: ``run_snakemake(workdir, *args, config=path)``."""
    return _run_snakemake


@pytest.fixture(scope="session")
def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="session")
def tiny_config_path() -> Path:
    return REPO / "tests" / "data" / "tiny.yaml"


def snakemake_or_fail(workdir: Path, config: Path, *args: str) -> None:
    """Run the workflow; on failure, fail the test with Snakemake's stderr and the tail of every job log."""
    proc = _run_snakemake(workdir, *args, config=config)
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"snakemake in {workdir} failed:\n{proc.stderr[-6000:]}\n{logs}")


def product_sha256(workdir: Path) -> dict[str, str]:
    """sha256 of each yearly product COG of a run."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((workdir / "results" / "panda_fine").glob("PANDA-FINE_*.tif"))}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_config_path) -> Path:
    """The tiny workflow, run once per session from scratch (``--cores 32``); shared by the workflow tests,
    which only dry-run in it, finish it again, or copy it."""
    work = tmp_path_factory.mktemp("tiny")
    snakemake_or_fail(work, tiny_config_path, "--cores", "32")
    (work.parent / f"{work.name}.clean_cogs.json").write_text(json.dumps(product_sha256(work)))
    return work


@pytest.fixture(scope="session")
def tiny_run_cogs(tiny_run) -> dict[str, str]:
    """sha256 of the tiny run's products as its clean run wrote them."""
    return json.loads((tiny_run.parent / f"{tiny_run.name}.clean_cogs.json").read_text())


@pytest.fixture()
def tiny_config(tiny_config_path) -> dict:
    return copy.deepcopy(yaml.safe_load(tiny_config_path.read_text()))


@pytest.fixture()
def small_grid() -> Grid:
    """A 64 x 48 px Albers grid of 125 m (8 x 6 PANDA cells)."""
    return Grid(CHINA_ALBERS, Affine(125.0, 0, -1_000_000.0, 0, -125.0, 4_000_000.0), 64, 48, 8)


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real sample rasters not present at {REALDATA}")
    return REALDATA


#: Fixtures that train a model (seconds each): every test that uses one is marked ``slow``, so the
#: fast loop (``pytest -m "not slow"``) skips them. A new training fixture goes in this list.
MODEL_TRAINING_FIXTURES = frozenset({
    "trained",      # inference/test_sampling.py, studies/test_design_space.py, training/test_evaluate.py
    "ablation",     # studies/test_ablation.py
    "first_run",    # studies/test_design_space_cli.py
    "exported",     # training/test_export.py
    "unet", "mmntlsr",  # training/test_quantize.py
    "reference",    # training/test_train.py
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if MODEL_TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
