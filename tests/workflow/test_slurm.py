"""The SLURM profile (workflow/profiles/slurm) and the workflow on a real SLURM scheduler.

The profile checks run everywhere. The end-to-end test (tests/slurm/run_slurm_test.sh) needs
root, the Debian packages slurm-wlm and munge (installed by the script when missing) and
snakemake-executor-plugin-slurm (``pip install -e ".[slurm]"``): it starts a one-node cluster,
runs the tiny config inferred in blocks (its infer jobs grouped by the profile) through
``--profile workflow/profiles/slurm`` and locally, and compares every product byte for byte.
It is skipped unless ``PANDAFINE_SLURM_TEST=1``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

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


@pytest.mark.parametrize("rule", ["train", "level", "infer"])
def test_gpu_request_is_on_by_default_and_can_be_turned_off(profile, monkeypatch, rule):
    expr = profile["set-resources"][rule]["gpu"]
    monkeypatch.delenv("PANDAFINE_SLURM_GPUS", raising=False)
    assert _evaluate(expr) == 1
    monkeypatch.setenv("PANDAFINE_SLURM_GPUS", "0")
    assert _evaluate(expr) == 0          # the plugin adds no --gpus for 0
    monkeypatch.setenv("PANDAFINE_SLURM_GPUS", "2")
    assert _evaluate(expr) == 2


def _pairs(entries: list[str]) -> dict[str, str]:
    """A profile list of ``KEY=VALUE`` entries (as for --groups, --resources, ...) as a dict."""
    return dict(entry.split("=", 1) for entry in entries)


def test_infer_jobs_are_grouped_by_year_in_chunks(profile):
    assert _pairs(profile["groups"]) == {"infer": "infer_{year}"}     # a group holds one year's blocks
    components = _pairs(profile["group-components"])
    assert set(components) == {"infer_{year}"}                        # names the group, wildcard included
    assert 2 <= int(components["infer_{year}"]) <= 16


def test_a_group_has_one_slot_of_its_own_that_infer_jobs_take(profile):
    """Every job takes the group_slot, each submitted group has one (scope local): a group's jobs are laid
    out one per layer, and no other job or group is limited by it."""
    from snakemake.cli import parse_set_resource_scope
    from snakemake.resources import Resources, ResourceScopes

    assert _evaluate(profile["default-resources"]["group_slot"]) == 1
    assert Resources.parse(profile["resources"], allow_expressions=False)["group_slot"].value == 1
    scopes = ResourceScopes.defaults()
    scopes.update(parse_set_resource_scope(profile["set-resource-scopes"]))
    assert scopes.is_local("group_slot")
    assert scopes.is_local("mem_mb") and scopes.is_excluded("runtime")  # Snakemake's defaults kept


def _group_request(profile, jobs: list[dict], with_profile_constraints: bool = True) -> dict:
    """The resources Snakemake requests for a group of independent ``jobs`` (their resources), computed
    as GroupJob.resources does in the main process of a cluster run (no --cores: threads unconstrained)."""
    from snakemake.resources import GroupResources, Resources

    constraints = Resources.parse(profile["resources"] if with_profile_constraints else [], allow_expressions=False)
    constraints["_cores"] = None
    constraints["_nodes"] = None
    stand_ins = [SimpleNamespace(pipe_group=None, resources=dict(job)) for job in jobs]
    return GroupResources.basic_layered([stand_ins], constraints, run_local=False, additive_resources=["runtime"],
                                        sortby=["runtime"])


@pytest.mark.parametrize("gpus", ["1", "0"])
def test_a_group_requests_one_blocks_cpus_memory_and_gpu_and_the_sum_of_the_runtimes(profile, monkeypatch, gpus):
    """A group job runs its blocks one after another (the plugin runs the group with --jobs 1), on one GPU
    or, with PANDAFINE_SLURM_GPUS=0, on the CPUs of one block."""
    monkeypatch.setenv("PANDAFINE_SLURM_GPUS", gpus)
    n = int(_pairs(profile["group-components"])["infer_{year}"])
    infer = profile["set-resources"]["infer"]
    job = {"_cores": 2, "_nodes": 1, "mem_mb": 3005, "runtime": 17, "tmpdir": "/tmp",
           "cpus_per_task": _evaluate(profile["default-resources"]["cpus_per_task"], threads=2),
           "gpu": _evaluate(infer["gpu"]), "group_slot": _evaluate(profile["default-resources"]["group_slot"])}
    got = _group_request(profile, [job] * n)
    assert (got["runtime"], got["cpus_per_task"], got["mem_mb"], got["gpu"]) == (n * 17, 2, 3005, int(gpus))
    # without the slot the n jobs would be one layer: n GPUs, n x the CPUs and memory, one block's runtime
    unconstrained = _group_request(profile, [job] * n, with_profile_constraints=False)
    assert (unconstrained["runtime"], unconstrained["cpus_per_task"], unconstrained["gpu"]) == (17, 2 * n, n * int(gpus))


# The main snakemake of a dry run with the profile, printing each group job's resources (GroupJob.resources,
# what the plugin turns into sbatch options) and those of its jobs when it lists the group.
_SPY_ON_GROUPS = """
import json, sys
from snakemake.cli import main
from snakemake.jobs import GroupJob

def ints(resources):
    return {k: v for k, v in resources.items() if isinstance(v, int) and not isinstance(v, bool)}

log_info = GroupJob.log_info
def spy(self, *args, **kwargs):
    print("GROUP " + json.dumps({"groupid": self.groupid, "resources": ints(self.resources),
                                 "jobs": [dict(rule=j.rule.name, **ints(j.resources)) for j in self.jobs]}), flush=True)
    return log_info(self, *args, **kwargs)

GroupJob.log_info = spy
main(sys.argv[1:])
"""


def test_dry_run_of_a_blocked_config_groups_each_years_blocks(tmp_path, tiny_config_path, monkeypatch):
    """The tiny config in 2 x 2 blocks: each year's 4 infer jobs are one group job, which asks for one
    block's CPUs, memory and GPU and for the sum of the 4 runtimes."""
    pytest.importorskip("snakemake_executor_plugin_slurm")       # the profile's executor
    cfg = yaml.safe_load(tiny_config_path.read_text())
    cfg["grid"]["block"] = cfg["product"]["blocksize"] = 64      # 104 x 96 px: 2 x 2 blocks
    config = tmp_path / "tiny_blocked.yaml"
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.delenv("PANDAFINE_SLURM_GPUS", raising=False)     # the default: 1 GPU a job
    # -n alone means --cores 1, which would cap threads at 1 and itself serialise a group's jobs: give the
    # unconstrained cores of a cluster run instead.
    proc = subprocess.run([sys.executable, "-c", _SPY_ON_GROUPS, "-s", str(REPO / "Snakefile"),
                           "--profile", str(PROFILE.parent), "--directory", str(tmp_path / "run"),
                           "--configfile", str(config), "-n", "--cores", "1000"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    groups = [json.loads(line[len("GROUP "):]) for line in proc.stdout.splitlines() if line.startswith("GROUP ")]
    assert sorted(g["groupid"] for g in groups) == ["infer_2018", "infer_2019"], proc.stdout[-4000:]
    for group in groups:
        jobs, request = group["jobs"], group["resources"]
        assert [j["rule"] for j in jobs] == ["infer"] * 4
        assert request["runtime"] == sum(j["runtime"] for j in jobs)
        for key in ("cpus_per_task", "mem_mb", "gpu"):              # one job's, not the sum of the 4
            assert request[key] == max(j[key] for j in jobs), key
        assert request["cpus_per_task"] == max(j["_cores"] for j in jobs)     # the threads of one job
        assert request["gpu"] == 1


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
                          capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert "COGs byte-identical" in proc.stdout
    grouped = re.search(r"(\d+) infer jobs in (\d+) submissions", proc.stdout)
    assert grouped and int(grouped[2]) < int(grouped[1]), proc.stdout[-2000:]
