"""Truncated and corrupt rasters, BigTIFF and failed GDAL writes (pandafine.core.raster_io, tiff_check, faults)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
from affine import Affine

from pandafine.core.faults import SHOWN_GDAL_ERRORS, RasterFileError, RasterWriteError, gdal_write_errors
from pandafine.core.grid import Grid
from pandafine.core.raster_io import (
    BIGTIFF_ABOVE_BYTES,
    float_profile,
    geotiff_profile,
    grid_of,
    open_georeferenced,
    read_raster,
)
from pandafine.core.tiff_check import tiff_damage

CRS = "EPSG:32650"
TRANSFORM = Affine(100.0, 0, 500_000.0, 0, -100.0, 4_000_000.0)


def write_geotiff(path, *, tiled: bool, size: int = 512, big: bool = False):
    """A float32 deflate GeoTIFF of noise written by rasterio: 256 px tiles, or strips."""
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="float32", crs=CRS, transform=TRANSFORM,
                   nodata=float("nan"), compress="deflate", tiled=tiled, BIGTIFF="YES" if big else "NO")
    if tiled:
        profile.update(blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).random((1, size, size), dtype=np.float32))
    return path


def cut(path, n_bytes: int):
    """Cut the last ``n_bytes`` of a file (an interrupted download or copy)."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - n_bytes])
    return path


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "strips"])
@pytest.mark.parametrize("reader", [read_raster, grid_of, open_georeferenced])
def test_truncated_geotiff_is_said_truncated_and_named(tmp_path, tiled, reader):
    path = cut(write_geotiff(tmp_path / "layer.tif", tiled=tiled), 100)
    with pytest.raises(RasterFileError) as exc:
        result = reader(path)
        if hasattr(result, "close"):
            result.close()
    msg = str(exc.value)
    assert str(path) in msg and "truncated" in msg
    assert "no CRS" not in msg


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "strips"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
def test_tiff_damage_finds_every_cut(tmp_path, tiled, big):
    path = write_geotiff(tmp_path / "layer.tif", tiled=tiled, size=300, big=big)
    assert tiff_damage(path) is None
    data = path.read_bytes()
    for n in sorted({1, 2, 7, 64, 1000, len(data) // 2, len(data) - 200, len(data) - 9, len(data) - 1}):
        part = tmp_path / f"cut{n}.tif"
        part.write_bytes(data[:len(data) - n])
        assert tiff_damage(part), f"a cut of the last {n} of {len(data)} bytes is not seen"


def test_tiff_damage_leaves_whole_and_non_tiff_files(tmp_path):
    cog = tmp_path / "cog.tif"
    with rasterio.open(cog, "w", driver="COG", width=600, height=600, count=1, dtype="uint8", crs=CRS,
                       transform=TRANSFORM, compress="deflate", blocksize=256, overview_count=2) as dst:
        dst.write(np.arange(360000, dtype=np.uint8).reshape(1, 600, 600))
    assert tiff_damage(cog) is None
    (tmp_path / "text.tif").write_text("not a tiff at all")
    assert tiff_damage(tmp_path / "text.tif") is None
    (tmp_path / "empty.tif").write_bytes(b"")
    assert "empty" in tiff_damage(tmp_path / "empty.tif")
    (tmp_path / "header.tif").write_bytes(b"II*\0")
    assert "truncated" in tiff_damage(tmp_path / "header.tif")


def test_file_gdal_cannot_open_is_named(tmp_path):
    path = tmp_path / "noise.tif"
    path.write_bytes(b"\x89PNG not really")
    with pytest.raises(RasterFileError, match="noise.tif: corrupt"):
        read_raster(path)


def test_corrupt_block_read_names_the_file(tmp_path):
    path = write_geotiff(tmp_path / "layer.tif", tiled=True)
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 200] = bytes(200)  # a tile's deflate stream broken, not its size
    path.write_bytes(bytes(data))
    assert tiff_damage(path) is None
    with pytest.raises(RasterFileError, match=r"layer\.tif: corrupt or unreadable raster"):
        read_raster(path)


# ----------------------------------------------------------------------------- BigTIFF


def test_profiles_ask_for_bigtiff_past_4_gb():
    # 40 000 x 30 000 float32 = 4.8 GB uncompressed: a classic TIFF could not hold it
    big = Grid(CRS, TRANSFORM, 40_000, 30_000, 1)
    assert big.width * big.height * 4 > 4 * 2**30
    assert geotiff_profile(big, 1, "float32")["BIGTIFF"] == "YES"
    assert float_profile(CRS, TRANSFORM, 40_000, 30_000, 1)["BIGTIFF"] == "YES"
    assert geotiff_profile(Grid(CRS, TRANSFORM, 20_000, 20_000, 1), 2, "uint8")["BIGTIFF"] == "IF_SAFER"
    small = Grid(CRS, TRANSFORM, 1000, 1000, 1)
    assert geotiff_profile(small, 1, "float32")["BIGTIFF"] == "IF_SAFER"
    assert float_profile(CRS, TRANSFORM, 1000, 1000, 2)["BIGTIFF"] == "IF_SAFER"
    # just past the threshold, by bands
    n = int(np.sqrt(BIGTIFF_ABOVE_BYTES / 8)) + 1
    assert geotiff_profile(Grid(CRS, TRANSFORM, n, n, 1), 2, "float32")["BIGTIFF"] == "YES"


def test_large_grid_is_created_as_a_bigtiff(tmp_path):
    """GDAL makes a BigTIFF of the profile (an empty sparse file: no data written)."""
    big = Grid(CRS, TRANSFORM, 40_000, 30_000, 1)
    for name, profile in {"geotiff": geotiff_profile(big, 1, "float32", np.nan),
                          "float": float_profile(CRS, TRANSFORM, 40_000, 30_000, 1)}.items():
        path = tmp_path / f"{name}.tif"
        with rasterio.open(path, "w", SPARSE_OK=True, **profile):
            pass
        assert path.read_bytes()[:4] == b"II+\0", f"{name}: not a BigTIFF"
    small = tmp_path / "small.tif"
    with rasterio.open(small, "w", **geotiff_profile(Grid(CRS, TRANSFORM, 300, 300, 1), 1, "float32")) as dst:
        dst.write(np.zeros((1, 300, 300), np.float32))
    assert small.read_bytes()[:4] == b"II*\0"  # a small file stays a classic TIFF


# ----------------------------------------------------------------------------- failed GDAL writes

WRITER = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from affine import Affine
    from pandafine.core.grid import Grid
    from pandafine.core.raster_io import geotiff_profile, iter_windows, open_writer

    grid = Grid("EPSG:32650", Affine(100.0, 0, 500000.0, 0, -100.0, 4000000.0), 200, 200, 1)
    arr = np.random.default_rng(0).random((1, 200, 200), dtype=np.float32)
    # files may not pass 50 kB: a write past that fails with EFBIG (the signal ignored), as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.RLIM_INFINITY))
    try:
        # small windows of a strip GeoTIFF stay in GDAL's block cache; they are written when it is closed
        with open_writer(sys.argv[1], geotiff_profile(grid, 1, "float32", np.nan)) as dst:
            for w in iter_windows(200, 200, 64):
                dst.write(arr[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width], window=w)
    except Exception as exc:
        print("RAISED", type(exc).__name__, exc)
    else:
        print("NOT RAISED")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE / SIGXFSZ")
def test_gdal_write_failure_at_close_is_raised_not_logged(tmp_path):
    out = tmp_path / "out.tif"
    run = subprocess.run([sys.executable, "-c", WRITER, str(out)], capture_output=True, text=True, timeout=120)
    assert "RAISED RasterWriteError" in run.stdout, run.stdout + run.stderr
    assert str(out) in run.stdout and "Write error" in run.stdout
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def gdal_failure(message: str) -> None:
    """What rasterio does with a GDAL CE_Failure it does not raise: an INFO record of its logger."""
    logging.getLogger("rasterio._env").info("GDAL signalled an error: err_no=%r, msg=%r", 1, message)


def test_gdal_write_errors_are_raised_once_and_not_logged_per_block(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(RasterWriteError) as exc:
        with gdal_write_errors(tmp_path / "big.tif"):
            gdal_failure("TIFFAppendToStrip:Read error at row 3")  # a read: rasterio raises those itself
            for row in range(10_000):
                gdal_failure(f"TIFFAppendToStrip:Maximum TIFF file size exceeded (block {row})")
    assert str(exc.value) == (f"{tmp_path / 'big.tif'}: writing failed: GDAL: TIFFAppendToStrip:Maximum TIFF file "
                              "size exceeded (block 0) (and 9999 more GDAL error(s))")
    logged = [r.getMessage() for r in caplog.records if r.name == "rasterio._env"]
    assert len(logged) == 1 + SHOWN_GDAL_ERRORS  # the read error, and the first write errors only


def test_gdal_write_errors_seen_whatever_the_log_level(tmp_path, caplog):
    """rasterio's logger at WARNING (the default) drops INFO records before any filter: not these."""
    logger = logging.getLogger("rasterio._env")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with pytest.raises(RasterWriteError, match="Write error at scanline 48"):
            with gdal_write_errors(tmp_path / "x.tif"):
                gdal_failure("TIFFAppendToStrip:Write error at scanline 48")
        assert [r for r in caplog.records if r.name == "rasterio._env"] == []  # nothing shown that was not before
        assert logger.level == logging.WARNING and logger.filters == []
        with gdal_write_errors(tmp_path / "y.tif"):  # nothing reported: nothing raised
            pass
    finally:
        logger.setLevel(level)
