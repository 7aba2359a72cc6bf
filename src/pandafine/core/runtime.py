"""Thread budgets: make every library in a job use the threads its rule declared.

Call :func:`limit_threads` before importing numpy-heavy libraries (the CLI does
it first thing), then :func:`configure_torch` / :func:`ort_session_options`
where those libraries are used. With ``snakemake --cores 32`` each job gets its
declared ``threads`` and nothing inside it starts more.

GDAL's block cache is bounded per process too (:data:`GDAL_CACHE_MB`), and
tighter inside the stages that stream a raster window by window
(:func:`gdal_cache_limit`, :data:`STREAM_GDAL_CACHE_MB`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "GDAL_NUM_THREADS")

_threads = 1

#: GDAL's raster block cache in MB. GDAL's default is 5 % of physical memory (1.2 GB on a 24 GB
#: node), so a job's memory would grow with the region until that cap; a fixed cache keeps a
#: job's peak memory set by its windows, not by the machine or the region.
GDAL_CACHE_MB = 256
#: GDAL's block cache in MB inside a streaming stage (:func:`gdal_cache_limit`). Such a stage
#: touches each block of its files a few times, one window after the other, so it needs the blocks
#: of one window and its neighbours only (a 1024 px window of float32 is 4 MiB), not a cache that
#: fills with every block the stage has read or written: with :data:`GDAL_CACHE_MB` its peak memory
#: grew with the region until the cache was full (1.2-1.5x for 4x the area at 4000 px per side).
STREAM_GDAL_CACHE_MB = 32


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
    # dask reads DASK_* variables when it is imported; import it here only when it already is (its import
    # takes 0.2-0.4 s, and most stages never use it: each job is a new process).
    os.environ.update(DASK_SCHEDULER="threads", DASK_NUM_WORKERS=str(n))
    if "dask" in sys.modules:
        import dask

        dask.config.set(scheduler="threads", num_workers=n)
    return n


def cache_limit_bytes(current: int, mb: int) -> int:
    """The GDAL cache size (bytes) :func:`gdal_cache_limit` sets: ``mb`` MiB, or ``current`` if that is smaller.

    Parameters
    ----------
    current : int
        GDAL's cache size now, in bytes.
    mb : int
        The bound, in MiB (>= 1).

    Returns
    -------
    int
        ``min(current, mb * 2**20)``: a bound never raises a smaller cache (``GDAL_CACHEMAX`` set lower).
    """
    if mb < 1:
        raise ValueError(f"GDAL cache bound must be >= 1 MiB, got {mb}")
    return min(int(current), int(mb) * 2**20)


@contextlib.contextmanager
def gdal_cache_limit(mb: int = STREAM_GDAL_CACHE_MB) -> Iterator[int]:
    """Bound GDAL's raster block cache to ``mb`` MiB inside the ``with`` block, then restore it.

    For the stages that stream rasters window by window (PANDA and DEM
    calibration, resampling): their peak memory is then set by their windows,
    the same for any region size. Blocks cached beyond the bound are written
    (if dirty) and dropped at once. The cache is global to the process, so
    the bound holds for every thread until the block ends. Pixel values do not
    depend on the cache size.

    Parameters
    ----------
    mb : int
        The bound in MiB (default :data:`STREAM_GDAL_CACHE_MB`); a smaller
        cache (``GDAL_CACHEMAX`` set lower) is kept.

    Yields
    ------
    int
        The cache size in force inside the block, in bytes.
    """
    from rasterio.env import get_gdal_config, set_gdal_config

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    bound = cache_limit_bytes(before, mb)
    set_gdal_config("GDAL_CACHEMAX", bound)
    try:
        yield bound
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


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
