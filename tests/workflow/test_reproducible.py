"""Two clean runs of the tiny config from scratch give byte-identical products."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def _clean_run(work: Path, config: Path, run_snakemake) -> dict[str, str]:
    proc = run_snakemake(work, "--cores", "2", config=config)
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"snakemake in {work} failed:\n{proc.stderr[-6000:]}\n{logs}")
    cogs = sorted((work / "results" / "panda_fine").glob("*.tif"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cogs}


@pytest.mark.slow
def test_two_clean_runs_give_identical_cogs(tmp_path, tiny_config_path, run_snakemake):
    first = _clean_run(tmp_path / "run1", tiny_config_path, run_snakemake)
    second = _clean_run(tmp_path / "run2", tiny_config_path, run_snakemake)
    assert sorted(first) == ["PANDA-FINE_2018.tif", "PANDA-FINE_2019.tif"]
    differing = sorted(name for name in first if first[name] != second.get(name))
    assert not differing, f"COGs differ between two clean runs: {differing}"
    assert first == second
