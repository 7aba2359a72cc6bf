"""Per-process runtime settings: thread budgets (dask) and GDAL's block cache bound for the streaming stages."""

from __future__ import annotations

import pytest
from rasterio.env import get_gdal_config, set_gdal_config

from pandafine.core import runtime


def test_cache_limit_bytes_never_raises_a_smaller_cache():
    assert runtime.cache_limit_bytes(256 * 2**20, 32) == 32 * 2**20
    assert runtime.cache_limit_bytes(8 * 2**20, 32) == 8 * 2**20
    with pytest.raises(ValueError, match=">= 1 MiB"):
        runtime.cache_limit_bytes(2**30, 0)


def test_gdal_cache_limit_bounds_the_cache_and_restores_it():
    before = int(get_gdal_config("GDAL_CACHEMAX"))
    set_gdal_config("GDAL_CACHEMAX", 256 * 2**20)
    try:
        with runtime.gdal_cache_limit() as bound:
            assert bound == runtime.STREAM_GDAL_CACHE_MB * 2**20 == int(get_gdal_config("GDAL_CACHEMAX"))
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 256 * 2**20
        with pytest.raises(RuntimeError), runtime.gdal_cache_limit(4):
            assert int(get_gdal_config("GDAL_CACHEMAX")) == 4 * 2**20
            raise RuntimeError("stage failed")
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 256 * 2**20  # restored on errors too
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def test_limit_threads_sets_dask_workers_before_and_after_dask_is_imported():
    import subprocess
    import sys

    code = ("import sys\n"
            "from pandafine.core.runtime import limit_threads\n"
            "limit_threads(3)\n"
            "assert 'dask' not in sys.modules, 'limit_threads imported dask'\n"
            "import dask\n"
            "assert (dask.config.get('num_workers'), dask.config.get('scheduler')) == (3, 'threads')\n"
            "limit_threads(2)\n"
            "assert dask.config.get('num_workers') == 2\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
