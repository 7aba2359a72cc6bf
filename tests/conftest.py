"""Shared fixtures: the demo config, a tiny config, tiny rasters on a tiny grid."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from affine import Affine

from pandafine.core.grid import CHINA_ALBERS, Grid

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def demo_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="session")
def tiny_config_path() -> Path:
    return REPO / "tests" / "data" / "tiny.yaml"


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
