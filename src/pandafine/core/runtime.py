"""Thread budgets: make every library in a job use the threads its rule declared.

Call :func:`limit_threads` before importing numpy-heavy libraries (the CLI does
it first thing), then :func:`configure_torch` / :func:`ort_session_options`
where those libraries are used. With ``snakemake --cores 32`` each job gets its
declared ``threads`` and nothing inside it starts more.
"""

from __future__ import annotations

import os

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "GDAL_NUM_THREADS")

_threads = 1

#: GDAL's raster block cache in MB. GDAL's default is 5 % of physical memory (1.2 GB on a 24 GB
#: node), so a job's memory would grow with the region until that cap; a fixed cache keeps a
#: job's peak memory set by its windows, not by the machine or the region.
GDAL_CACHE_MB = 256


def limit_threads(n: int) -> int:
    """Set the thread budget of this process to ``n`` (>= 1) for BLAS, OpenMP, GDAL and dask.

    Also bounds GDAL's block cache to :data:`GDAL_CACHE_MB` unless ``GDAL_CACHEMAX`` is set.
    """
    global _threads
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    _threads = n
    for var in _THREAD_ENV:
        os.environ[var] = str(n)
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    try:
        import dask

        dask.config.set(scheduler="threads", num_workers=n)
    except ImportError:  # pragma: no cover - dask is a dependency
        pass
    return n


def threads() -> int:
    """The thread budget set by :func:`limit_threads` (1 if never set)."""
    return _threads


def configure_torch() -> None:
    """Apply the thread budget to PyTorch (intra- and inter-op pools)."""
    import torch

    torch.set_num_threads(_threads)
    try:
        torch.set_num_interop_threads(max(1, min(_threads, 2)))
    except RuntimeError:  # already set once in this process
        pass


def ort_session_options():
    """onnxruntime SessionOptions limited to the thread budget."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = _threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so
