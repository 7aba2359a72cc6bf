"""A corrupt inference cube fails its year only: ``snakemake --keep-going`` finishes the other years.

The tiny workflow (tests/data/tiny.yaml, 2 years) is copied from the session's
tiny run and its products removed, leaving the inference cubes and the exported
model; then one chunk file of one year's cube
(``results/tiles/cube/{year}.zarr/inputs/c/...``, zstd-compressed) is garbled in
place, as bit rot or a broken copy would leave it (same size, same mtime, so
Snakemake sees nothing to rebuild). ``snakemake --keep-going`` must then fail
that year's ``infer`` job with a message naming the cube, and still write every
other year's COG.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

YEARS = (2018, 2019)
BAD = 2019
MODEL = "results/models/unet/model.onnx"


def cube(year: int) -> str:
    return f"results/tiles/cube/{year}.zarr"


def product(year: int) -> str:
    return f"results/panda_fine/PANDA-FINE_{year}.tif"


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_run) -> Path:
    """A tiny workdir with the cubes of every year and the ONNX model, no product: a copy of the session's
    tiny run (``tiny_run``) without its products."""
    work = tmp_path_factory.mktemp("keep_going") / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    shutil.rmtree(work / "results" / "panda_fine")  # products, catalog, provenance
    assert (work / MODEL).is_file() and all((work / cube(y)).is_dir() for y in YEARS)
    return work


def garble(path: Path, seed: int = 0) -> None:
    """Overwrite ``path`` with random bytes of the same length, keeping its timestamps."""
    st = path.stat()
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, st.st_size, dtype=np.uint8).tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.slow
def test_corrupt_cube_fails_its_year_and_keep_going_finishes_the_others(built, tiny_config_path, run_snakemake):
    from pandafine.product.cog import validate_cog

    chunks = sorted((built / cube(BAD) / "inputs" / "c").rglob("*"))
    chunks = [p for p in chunks if p.is_file()]
    assert len(chunks) >= 2, chunks
    garble(chunks[-1])  # the last chunk: the run fails after some tile rows are done

    proc = run_snakemake(built, "--cores", "2", "--keep-going", *(product(y) for y in YEARS),
                      "results/panda_fine/catalog.json", config=tiny_config_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]

    # only the inference jobs ran: the corruption went unnoticed by Snakemake's timestamps
    ran = {line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith(("rule ", "localrule "))}
    assert ran == {"infer"}, out[-4000:]

    # the corrupt year failed, naming its cube, and left no product (nor temporaries) behind
    assert not (built / product(BAD)).exists()
    log = (built / "logs" / "infer" / f"{BAD}.log").read_text()
    last = log.strip().splitlines()[-1]
    assert cube(BAD) in last and "error" in last.lower(), log[-3000:]
    assert "Traceback" not in log
    assert [p.name for p in (built / "results" / "panda_fine").iterdir()] == [Path(product(y)).name
                                                                              for y in YEARS if y != BAD]
    assert "infer" in out and f"year={BAD}" in out  # Snakemake reports the failed job

    # every other year's COG was written and is complete
    for year in YEARS:
        if year == BAD:
            continue
        cog = built / product(year)
        assert validate_cog(cog)[0], cog
        import rasterio

        with rasterio.open(cog) as ds:
            data = ds.read(1)
            assert ds.tags()["year"] == str(year)
            assert np.isfinite(data).mean() > 0.9 and np.nanmax(data) > 0

    # the catalog needs every year, so it is not written
    assert not (built / "results" / "panda_fine" / "catalog.json").exists()
