"""Threads of the model jobs and the years whose jobs go first (pandafine.core.scheduling)."""

from __future__ import annotations

import pytest

from pandafine.core.scheduling import model_job_threads, training_input_years


@pytest.mark.parametrize(("most", "cores", "cpus", "expected"), [
    (4, 2, 2, 1),      # the demo: train beside the ablation, one thread each
    (2, 2, 2, 1),      # infer: two years at once
    (4, 32, 2, 1),     # --cores 32 on a 2-CPU machine trains as --cores 2 does (same bits)
    (4, 32, 64, 4),    # a workstation: what the rule declares
    (4, 6, 64, 3),
    (4, 1, 8, 1),      # never 0
    (4, 8, None, 4),   # CPUs unknown: --cores alone
])
def test_local_model_jobs_take_at_most_half_the_cores(most, cores, cpus, expected):
    assert model_job_threads(most, cores, cpus) == expected


def test_cluster_jobs_and_runs_without_cores_get_what_the_rule_declares():
    assert model_job_threads(4, 2, 2, local=False) == 4
    assert model_job_threads(4, None, 2) == 4
    with pytest.raises(ValueError, match=">= 1"):
        model_job_threads(0, 2, 2)


def test_training_input_years_are_the_targets_and_their_gapfill_years():
    assert training_input_years([2018, 2019], 2) == {2016, 2017, 2018, 2019, 2020, 2021}
    assert training_input_years([2018], 0) == {2018}
    with pytest.raises(ValueError, match="gapfill"):
        training_input_years([2018], -1)
