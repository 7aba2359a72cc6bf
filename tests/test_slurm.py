"""The workflow on a real SLURM scheduler (tests/slurm/run_slurm_test.sh).

Needs root, the Debian packages slurm-wlm and munge (installed by the script when missing) and
snakemake-executor-plugin-slurm (``pip install -e ".[slurm]"``); it starts a one-node cluster,
runs the tiny config through ``--profile workflow/profiles/slurm`` and locally, and compares
every product byte for byte. Skipped unless ``PANDAFINE_SLURM_TEST=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "slurm" / "run_slurm_test.sh"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PANDAFINE_SLURM_TEST") != "1",
                       reason="set PANDAFINE_SLURM_TEST=1 to run the SLURM test (root, installs slurm-wlm)"),
]


def test_tiny_workflow_under_slurm_matches_local_run(tmp_path):
    env = dict(os.environ, PANDAFINE_PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "slurm-test")], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert "COGs byte-identical" in proc.stdout
