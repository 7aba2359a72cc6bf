"""Calibrating a truncated PANDA file: an error naming it and saying it is truncated (not "no CRS")."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from affine import Affine

from pandafine.core.faults import RasterFileError
from pandafine.core.grid import Grid
from pandafine.core.raster_io import write_raster
from pandafine.preprocess.calibrate import calibrate_panda

CFG = {"preprocess": {"panda_out_of_range": "error"}}
GEO_KEY_DIRECTORY = 34735


def tag_data_offset(data: bytes, tag: int) -> int:
    """Where the value of ``tag`` of the first directory of a little-endian classic TIFF is stored."""
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = data[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
        if struct.unpack("<H", entry[:2])[0] == tag:
            return struct.unpack("<I", entry[8:12])[0]
    raise AssertionError(f"no tag {tag}")


@pytest.mark.parametrize("cut", ["last byte", "georeferencing", "half"])
def test_truncated_panda_is_said_truncated(tmp_path, cut):
    """Cut through its georeferencing tags, the file used to open as one without a CRS."""
    grid = Grid("EPSG:4326", Affine(0.01, 0, 110.0, 0, -0.01, 40.0), 40, 30, 1)
    raw = write_raster(tmp_path / "PANDA_China_2015.tif", (np.arange(1200).reshape(30, 40) % 64).astype(np.uint8),
                       grid, nodata=255)
    calibrate_panda(CFG, raw, tmp_path / "whole.tif")  # the whole file calibrates
    data = raw.read_bytes()
    keep = {"last byte": len(data) - 1, "half": len(data) // 2,
            "georeferencing": tag_data_offset(data, GEO_KEY_DIRECTORY) + 4}[cut]
    raw.write_bytes(data[:keep])
    out = tmp_path / "out" / "2015.tif"
    with pytest.raises(RasterFileError) as exc:
        calibrate_panda(CFG, raw, out)
    msg = str(exc.value)
    assert msg.startswith(f"{raw}: truncated") and "no CRS" not in msg
    assert not out.exists()
