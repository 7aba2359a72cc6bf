"""The synthetic scene writes its own sensor conversions (an independent oracle): they agree with the
pipeline's on known values, so a divergence is a bug in one of them, not a silent drift."""

from __future__ import annotations

import numpy as np
import pytest

from pandafine.sensors import landsat, luojia
from pandafine.sources.dem import DemTile
from pandafine.synthetic import observe as obs


def test_luojia_dn_radiance_known_values():
    dn = np.array([0, 1, 100, 10_000], np.int64)
    expected = np.array([0.0, 1e-10, 1e-7, 1e-4])  # DN^1.5 * 1e-10
    np.testing.assert_allclose(obs.luojia_radiance(dn), expected, rtol=1e-12)
    np.testing.assert_allclose(luojia.dn_to_radiance(dn), expected, rtol=1e-6)  # float32 there
    np.testing.assert_allclose(obs.luojia_dn(expected), luojia.radiance_to_dn(expected), rtol=1e-12)


@pytest.mark.parametrize("lat, lon, name", [(34, 108, "Copernicus_DSM_COG_30_N34_00_E108_00_DEM.tif"),
                                            (-1, -73, "Copernicus_DSM_COG_30_S01_00_W073_00_DEM.tif")])
def test_dem_tile_names_agree(lat, lon, name):
    assert obs.dem_tile_name(lat, lon) == name
    assert DemTile(lat, lon).copernicus_name + ".tif" == name


def test_collection2_scaling_and_qa_bits_agree():
    assert (obs.C2_SCALE, obs.C2_OFFSET) == (landsat.SR_SCALE, landsat.SR_OFFSET)
    bits = {"fill": obs.QA_FILL, "dilated_cloud": obs.QA_DILATED, "cirrus": obs.QA_CIRRUS, "cloud": obs.QA_CLOUD,
            "cloud_shadow": obs.QA_SHADOW, "snow": obs.QA_SNOW, "clear": obs.QA_CLEAR, "water": obs.QA_WATER}
    assert bits == landsat.QA_BITS
