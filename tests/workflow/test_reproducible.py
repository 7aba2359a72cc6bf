"""Clean runs of the tiny config from scratch give byte-identical products, whatever the parallelism."""

from __future__ import annotations

import pytest

from conftest import product_sha256, snakemake_or_fail


@pytest.mark.slow
def test_two_clean_runs_give_identical_cogs(tmp_path, tiny_config_path, tiny_run_cogs):
    """A second clean run (2 cores) against the session's clean tiny run (32 cores, ``tiny_run``)."""
    snakemake_or_fail(tmp_path / "run2", tiny_config_path, "--cores", "2")
    second = product_sha256(tmp_path / "run2")
    assert sorted(tiny_run_cogs) == ["PANDA-FINE_2018.tif", "PANDA-FINE_2019.tif"]
    differing = sorted(name for name in tiny_run_cogs if tiny_run_cogs[name] != second.get(name))
    assert not differing, f"COGs differ between two clean runs: {differing}"
    assert tiny_run_cogs == second
