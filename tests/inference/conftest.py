"""Fixtures of the inference tests."""

from __future__ import annotations

import pytest
import yaml

from repo_paths import REPO


@pytest.fixture
def cfg():
    """The demo config with small tiles (64 px, 16 px overlap), CPU only, 256 px COG blocks."""
    c = yaml.safe_load((REPO / "config.yaml").read_text())
    c["infer"].update(tile=64, overlap=16, window="hann", batch_size=4, providers=["CPUExecutionProvider"])
    c["product"].update(compress="zstd", blocksize=256)
    return c
