"""Two clean runs of the tiny config from scratch give byte-identical products."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def _snakemake(workdir: Path, *args: str, config: Path) -> subprocess.CompletedProcess:
    # Same invocation as tests/test_workflow.py.
    return subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "--configfile", str(config), *args],
                          capture_output=True, text=True, timeout=900)


def _clean_run(work: Path, config: Path) -> dict[str, str]:
    proc = _snakemake(work, "--cores", "2", config=config)
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"snakemake in {work} failed:\n{proc.stderr[-6000:]}\n{logs}")
    cogs = sorted((work / "results" / "panda_fine").glob("*.tif"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cogs}


@pytest.mark.slow
def test_two_clean_runs_give_identical_cogs(tmp_path, tiny_config_path):
    first = _clean_run(tmp_path / "run1", tiny_config_path)
    second = _clean_run(tmp_path / "run2", tiny_config_path)
    assert sorted(first) == ["PANDA-FINE_2018.tif", "PANDA-FINE_2019.tif"]
    differing = sorted(name for name in first if first[name] != second.get(name))
    assert not differing, f"COGs differ between two clean runs: {differing}"
    assert first == second
