"""How the workflow's jobs share the cores: threads of the model jobs and the order of ready jobs.

Pure decisions, used by ``workflow/rules/common.smk``. On a small machine the demo is bound by the
total work (thread-seconds), so the rules must not hold cores a job cannot use, and the training
(the longest job) must start early enough that the other jobs fill the cores beside it.
Measurements: ``docs/results/2026-12-07-demo-time.md``.
"""

from __future__ import annotations

from collections.abc import Iterable


def model_job_threads(most: int, cores: int | None, cpus: int | None, *, local: bool = True) -> int:
    """Threads of a job that runs a model on CPUs (PyTorch or onnxruntime).

    Parameters
    ----------
    most : int
        What the rule declares (>= 1).
    cores : int or None
        ``--cores`` of the run; None when not given.
    cpus : int or None
        CPUs of this machine (``os.cpu_count()``); None when unknown.
    local : bool
        False under a cluster executor and inside its jobs: a job then gets the CPUs it asks for.

    Returns
    -------
    int
        ``most`` for a cluster job or without ``--cores``; else at most half of the cores (the
        smaller of ``cores`` and ``cpus``, as ``pandafine --threads`` is capped by the CPUs), at
        least 1. On the demo's 2 cores a second thread made training 1.17x and inference 1.0x
        faster, so two jobs on one thread each finish sooner than one job on two.
    """
    if most < 1:
        raise ValueError(f"a rule's threads must be >= 1, got {most}")
    if not local or cores is None:
        return most
    usable = min(cores, cpus) if cpus else cores
    return max(1, min(most, usable // 2))


def training_input_years(target_years: Iterable[int], gapfill_years: int) -> frozenset[int]:
    """Years whose per-year jobs the training needs: the target years and the Landsat gap-fill years
    around them (``preprocess.landsat_gapfill_years``); their jobs get priority so that the training
    starts early."""
    if gapfill_years < 0:
        raise ValueError(f"landsat_gapfill_years must be >= 0, got {gapfill_years}")
    return frozenset(y for t in target_years for y in range(int(t) - gapfill_years, int(t) + gapfill_years + 1))
