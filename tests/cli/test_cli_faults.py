"""A stage that fails on a file or a disk prints one line naming it, not a traceback (pandafine.cli)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

import pandafine.cli as cli
from pandafine.cli import main
from pandafine.core import faults
from pandafine.core.atomic import atomic_path


def geotiff(path, *, tiled=True, size=512):
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="float32", crs="EPSG:32650",
                   transform=Affine(100.0, 0, 500_000.0, 0, -100.0, 4_000_000.0), nodata=float("nan"),
                   compress="deflate", tiled=tiled)
    if tiled:
        profile.update(blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).random((1, size, size), dtype=np.float32))
    return path


def truncate(path, n=100):
    data = path.read_bytes()
    path.write_bytes(data[:-n])
    return path


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pandafine {command}: error: ") and "Traceback" not in err
    return lines[0]


def with_handler(monkeypatch, handler):
    monkeypatch.setattr(cli, "resolve_handler", lambda spec: handler)


def test_truncated_panda_through_calibrate_is_one_line(tmp_path, tiny_config_path, capsys):
    raw = truncate(geotiff(tmp_path / "PANDA_China_2015.tif"))
    rc = main(["calibrate", "--config", str(tiny_config_path), "--layer", "panda", "--year", "2015",
               "--input", str(raw), "--output", str(tmp_path / "out" / "2015.tif")])
    line = one_error_line(capsys.readouterr().err, "calibrate")
    assert rc == 2 and str(raw) in line and "truncated" in line
    assert not (tmp_path / "out" / "2015.tif").exists()


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "strips"])
def test_rasterio_read_error_escaping_a_stage_names_the_file(tmp_path, tiny_config_path, monkeypatch, capsys,
                                                            tiled):
    """A stage reading with rasterio itself: GDAL's message names the file by its base name only."""
    src = truncate(geotiff(tmp_path / "2015.tif", tiled=tiled))

    def handler(args, cfg):
        with rasterio.open(args.input) as ds:
            ds.read()

    with_handler(monkeypatch, handler)
    monkeypatch.chdir(tmp_path.parent)  # the file is not found by its base name from here
    rc = main(["resample", "--config", str(tiny_config_path), "--layer", "panda", "--input", str(src),
               "--grid", str(tmp_path / "grid.json"), "--output", str(tmp_path / "out.tif")])
    line = one_error_line(capsys.readouterr().err, "resample")
    assert rc == 1 and f"{src}: truncated" in line and "PANDAFINE_DEBUG=1" in line


def test_file_found_under_a_directory_argument(tmp_path, tiny_config_path, monkeypatch, capsys):
    scene = tmp_path / "landsat" / "2015" / "LC08_X"
    scene.mkdir(parents=True)
    band = truncate(geotiff(scene / "LC08_X_SR_B4.TIF"))

    def handler(args, cfg):
        with rasterio.open(band) as ds:
            ds.read()

    with_handler(monkeypatch, handler)
    monkeypatch.chdir(tmp_path.parent)
    rc = main(["calibrate", "--config", str(tiny_config_path), "--layer", "luojia", "--year", "2015",
               "--input", str(tmp_path / "landsat" / "2015"), "--output", str(tmp_path / "out")])
    line = one_error_line(capsys.readouterr().err, "calibrate")
    assert rc == 1 and str(band) in line and "truncated" in line


def test_debug_env_shows_the_traceback(tmp_path, tiny_config_path, monkeypatch):
    src = truncate(geotiff(tmp_path / "2015.tif"))

    def handler(args, cfg):
        with rasterio.open(args.input) as ds:
            ds.read()

    with_handler(monkeypatch, handler)
    monkeypatch.setenv("PANDAFINE_DEBUG", "1")
    with pytest.raises(rasterio.errors.RasterioIOError):
        main(["resample", "--config", str(tiny_config_path), "--layer", "panda", "--input", str(src),
              "--grid", str(tmp_path / "grid.json"), "--output", str(tmp_path / "out.tif")])


def test_full_disk_in_a_stage_is_one_line(tmp_path, tiny_config_path, monkeypatch, capsys):
    out = tmp_path / "model"

    def handler(args, cfg):  # training's checkpoint on a full disk
        with atomic_path(args.out / "resume.pt"):
            raise RuntimeError("basic_ios::clear: iostream error")

    with_handler(monkeypatch, handler)
    monkeypatch.setattr(faults, "free_bytes", lambda path: 0)
    rc = main(["train", "--config", str(tiny_config_path), "--tiles", str(tmp_path / "train.zarr"),
               "--out", str(out)])
    line = one_error_line(capsys.readouterr().err, "train")
    assert rc == 1 and "disk full" in line and str(out / "resume.pt") in line and "0 B free" in line


def test_other_errors_keep_their_traceback(tmp_path, tiny_config_path, monkeypatch):
    def handler(args, cfg):
        raise RuntimeError("a bug")

    with_handler(monkeypatch, handler)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--config", str(tiny_config_path), "--tiles", str(tmp_path / "t.zarr"),
              "--out", str(tmp_path / "m")])


def test_failed_gdal_write_in_a_stage_is_one_line(tmp_path, tiny_config_path, monkeypatch, capsys):
    out = tmp_path / "resampled" / "2015.tif"

    def handler(args, cfg):
        raise faults.RasterWriteError(f"{args.output}: writing failed: GDAL: TIFFAppendToStrip:Maximum TIFF file "
                                      "size exceeded", args.output)

    with_handler(monkeypatch, handler)
    monkeypatch.setattr(faults, "free_bytes", lambda path: 50 * 2**30)
    rc = main(["resample", "--config", str(tiny_config_path), "--layer", "panda", "--input", str(tmp_path / "x.tif"),
               "--grid", str(tmp_path / "grid.json"), "--output", str(out)])
    line = one_error_line(capsys.readouterr().err, "resample")
    assert rc == 1 and f"{out}: writing failed: GDAL: TIFFAppendToStrip:Maximum TIFF file size exceeded" in line
