"""The SLURM profile (workflow/profiles/slurm) and the workflow on a real SLURM scheduler.

The profile checks run everywhere. The end-to-end test (tests/slurm/run_slurm_test.sh) needs
root, the Debian packages slurm-wlm and munge (installed by the script when missing) and
snakemake-executor-plugin-slurm (``pip install -e ".[slurm]"``): it starts a one-node cluster,
runs the tiny config through ``--profile workflow/profiles/slurm`` and locally, and compares
every product byte for byte. It is skipped unless ``PANDAFINE_SLURM_TEST=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from repo_paths import REPO

SCRIPT = REPO / "tests" / "slurm" / "run_slurm_test.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.v8+.yaml"


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def _evaluate(expr, threads: int = 2, attempt: int = 1):
    """A profile resource value evaluated the way Snakemake evaluates command-line resources."""
    from snakemake.resources import Resource

    return Resource.cli_evaluator("r", str(expr), wildcards={}, input=[], attempt=attempt, threads=threads,
                                  async_run=None)


def test_profile_submits_to_slurm_with_retries_and_squeue_status(profile):
    assert profile["executor"] == "slurm"
    assert profile["retries"] == 2
    assert profile["slurm-status-command"] == "squeue"
    defaults = profile["default-resources"]
    assert {"slurm_partition", "runtime", "mem_mb", "cpus_per_task"} <= set(defaults)
    assert _evaluate(defaults["cpus_per_task"], threads=3) == 3


def test_partition_and_account_come_from_the_environment(profile, monkeypatch):
    defaults = profile["default-resources"]
    for key, var in (("slurm_partition", "PANDAFINE_SLURM_PARTITION"), ("slurm_account", "PANDAFINE_SLURM_ACCOUNT")):
        monkeypatch.delenv(var, raising=False)
        assert _evaluate(defaults[key]) is None, key       # left out: the cluster's default
        monkeypatch.setenv(var, "gpu-a100")
        assert _evaluate(defaults[key]) == "gpu-a100", key


@pytest.mark.parametrize("rule", ["train", "infer"])
def test_gpu_request_is_on_by_default_and_can_be_turned_off(profile, monkeypatch, rule):
    expr = profile["set-resources"][rule]["gpu"]
    monkeypatch.delenv("PANDAFINE_SLURM_GPUS", raising=False)
    assert _evaluate(expr) == 1
    monkeypatch.setenv("PANDAFINE_SLURM_GPUS", "0")
    assert _evaluate(expr) == 0          # the plugin adds no --gpus for 0
    monkeypatch.setenv("PANDAFINE_SLURM_GPUS", "2")
    assert _evaluate(expr) == 2


def test_profile_keys_are_options_of_the_pinned_plugin(profile):
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
    from dataclasses import fields

    names = {f"slurm-{f.name.replace('_', '-')}" for f in fields(plugin.ExecutorSettings)}
    used = {k for k in profile if k.startswith("slurm-")}
    assert used <= names, sorted(used - names)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PANDAFINE_SLURM_TEST") != "1",
                    reason="set PANDAFINE_SLURM_TEST=1 to run the SLURM test (root, installs slurm-wlm)")
def test_tiny_workflow_under_slurm_matches_local_run(tmp_path):
    env = dict(os.environ, PANDAFINE_PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "slurm-test")], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert "COGs byte-identical" in proc.stdout
