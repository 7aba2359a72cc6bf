"""Landsat Collection-2 Level-2 conventions (pure functions, no file I/O).

* Band names per sensor: TM (Landsat 4/5) and ETM+ (Landsat 7) surface
  reflectance bands 1, 2, 3, 4, 5, 7 are blue, green, red, nir, swir1, swir2;
  OLI (Landsat 8/9) bands 1..7 are coastal, blue, green, red, nir, swir1, swir2.
* Scale and offset: rho = DN * 0.0000275 - 0.2, DN 0 is fill.
* QA_PIXEL bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow,
  5 snow, 6 clear, 7 water. Bits 0-4 make a pixel unusable.
* TM/ETM+ -> OLI harmonization with the ordinary-least-squares fits of
  Roy et al. (2016), *Remote Sensing of Environment* 185, 57-70, Table 2:
  ``OLI = slope * TM + intercept``. TM/ETM+ have no coastal band: the
  harmonized blue band stands in for it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from pandafine.core.channels import LANDSAT_BANDS

#: Collection-2 Level-2 surface reflectance scale factor and offset.
SR_SCALE = 0.0000275
SR_OFFSET = -0.2
#: DN of fill pixels in the SR bands.
SR_FILL = 0

#: QA_PIXEL bit numbers.
QA_BITS = {"fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3, "cloud_shadow": 4,
           "snow": 5, "clear": 6, "water": 7}
#: Bits that make an observation unusable (fill, dilated cloud, cirrus, cloud, shadow).
QA_REJECT_BITS = ("fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow")
QA_REJECT_MASK = sum(1 << QA_BITS[b] for b in QA_REJECT_BITS)  # 0b11111 = 31

#: SR band number of every named band, per sensor.
SENSOR_BANDS: dict[str, dict[str, int]] = {
    "TM": {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 7},
    "ETM+": {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 7},
    "OLI": {"coastal": 1, "blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6, "swir2": 7},
}

#: Sensor of each Landsat mission prefix of a scene id.
#: First year of Landsat 8 OLI (launched February 2013): the sensor era of the inputs changes here.
OLI_FIRST_YEAR = 2013
MISSION_SENSOR = {"LT04": "TM", "LT05": "TM", "LE07": "ETM+", "LC08": "OLI", "LC09": "OLI",
                  "LO08": "OLI", "LO09": "OLI"}

#: Roy et al. (2016) OLS TM/ETM+ -> OLI coefficients: band -> (slope, intercept).
ROY2016_OLS: dict[str, tuple[float, float]] = {
    "blue": (0.8474, 0.0003),
    "green": (0.8483, 0.0088),
    "red": (0.9047, 0.0061),
    "nir": (0.8462, 0.0412),
    "swir1": (0.8937, 0.0254),
    "swir2": (0.9071, 0.0172),
}

_SCENE_ID = re.compile(r"^(L[CEOTM]0\d)_(L2S[PR])_(\d{6})_(\d{8})_(\d{8})_(\d{2})_(T1|T2|RT)$")


def sensor_of(scene_id: str) -> str:
    """Sensor ('TM', 'ETM+' or 'OLI') of a Collection-2 scene id such as ``LT05_L2SP_...``.

    Raises
    ------
    ValueError
        If the mission prefix is not a Landsat 4/5/7/8/9 one.
    """
    prefix = scene_id[:4].upper()
    try:
        return MISSION_SENSOR[prefix]
    except KeyError:
        raise ValueError(f"scene id {scene_id!r}: unknown Landsat mission prefix {prefix!r}; "
                         f"expected one of {', '.join(sorted(MISSION_SENSOR))}") from None


def acquisition_date(scene_id: str) -> str:
    """Acquisition date ``YYYYMMDD`` of a Collection-2 scene id (4th field)."""
    m = _SCENE_ID.match(scene_id)
    if not m:
        raise ValueError(f"scene id {scene_id!r} does not look like a Collection-2 id "
                         "(e.g. LT05_L2SP_127036_19900712_20200916_02_T1)")
    return m.group(4)


def band_numbers(sensor: str) -> dict[str, int]:
    """SR band number of every band available for ``sensor``."""
    try:
        return SENSOR_BANDS[sensor]
    except KeyError:
        raise ValueError(f"unknown sensor {sensor!r}; expected one of {', '.join(SENSOR_BANDS)}") from None


def dn_to_reflectance(dn: np.ndarray) -> np.ndarray:
    """Surface reflectance ``DN * 0.0000275 - 0.2`` as float32, NaN where DN is fill (0)."""
    dn = np.asarray(dn)
    rho = (dn.astype(np.float64) * SR_SCALE + SR_OFFSET).astype(np.float32)
    rho[dn == SR_FILL] = np.nan
    return rho


def reflectance_to_dn(rho: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dn_to_reflectance` (rounded uint16; NaN -> fill 0)."""
    rho = np.asarray(rho, dtype=np.float64)
    dn = np.rint((rho - SR_OFFSET) / SR_SCALE)
    dn = np.where(np.isfinite(dn), np.clip(dn, 1, 65535), SR_FILL)
    return dn.astype(np.uint16)


def qa_reject(qa: np.ndarray) -> np.ndarray:
    """True where QA_PIXEL flags fill, dilated cloud, cirrus, cloud or cloud shadow."""
    return (np.asarray(qa).astype(np.uint32) & QA_REJECT_MASK) != 0


def harmonize_to_oli(rho: np.ndarray, band: str) -> np.ndarray:
    """Map TM/ETM+ reflectance of ``band`` to OLI-equivalent reflectance (Roy et al. 2016 OLS)."""
    try:
        slope, intercept = ROY2016_OLS[band]
    except KeyError:
        raise ValueError(f"no Roy et al. (2016) coefficients for band {band!r}; "
                         f"expected one of {', '.join(ROY2016_OLS)}") from None
    return (np.asarray(rho, dtype=np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def oli_to_tm(rho_oli: np.ndarray, band: str) -> np.ndarray:
    """Inverse of :func:`harmonize_to_oli` (for tests and synthetic data)."""
    slope, intercept = ROY2016_OLS[band]
    return ((np.asarray(rho_oli, dtype=np.float64) - intercept) / slope).astype(np.float32)


#: What the coastal channel may hold (``preprocess.landsat_coastal``): every sensor's blue band, or OLI's own
#: coastal band (TM/ETM+ have none and give blue either way).
COASTAL_MODES = ("blue", "native")


def scene_reflectance(dn_by_band: Mapping[str, np.ndarray], qa: np.ndarray, sensor: str,
                      coastal: str = "blue") -> np.ndarray:
    """OLI-equivalent surface reflectance of one scene (window).

    Parameters
    ----------
    dn_by_band : mapping of band name -> uint16 DN array
        The SR bands of ``sensor`` (names as in :data:`SENSOR_BANDS`).
    qa : integer array
        QA_PIXEL of the same shape.
    sensor : {'TM', 'ETM+', 'OLI'}
    coastal : {'blue', 'native'}
        What the coastal channel holds (:data:`COASTAL_MODES`): the blue band
        for every sensor, or OLI's coastal band (TM/ETM+ give blue either way).

    Returns
    -------
    numpy.ndarray
        float32 (7, rows, cols) in the order of
        :data:`pandafine.core.channels.LANDSAT_BANDS`; NaN where DN is fill or QA
        rejects the pixel. TM/ETM+ bands are harmonized to OLI and their
        coastal band is the harmonized blue band.
    """
    if coastal not in COASTAL_MODES:
        raise ValueError(f"preprocess.landsat_coastal={coastal!r}; expected one of {', '.join(COASTAL_MODES)}")
    needed = band_numbers(sensor)
    missing = sorted(set(needed) - set(dn_by_band))
    if missing:
        raise ValueError(f"{sensor} scene: missing band(s) {', '.join(missing)}")
    bad = qa_reject(qa)
    out = np.empty((len(LANDSAT_BANDS),) + bad.shape, dtype=np.float32)
    for i, name in enumerate(LANDSAT_BANDS):
        src = "blue" if name == "coastal" and (sensor != "OLI" or coastal == "blue") else name
        rho = dn_to_reflectance(dn_by_band[src])
        if sensor != "OLI":
            rho = harmonize_to_oli(rho, src)
        rho[bad] = np.nan
        out[i] = rho
    return out


# ----------------------------------------------------------------------------- scenes to read


@dataclass(frozen=True)
class SceneAssets:
    """Where one scene's files are: a local path or an (unsigned) URL per SR band and for ``QA_PIXEL``.

    Attributes
    ----------
    scene_id : str
        Collection-2 product id (``LC08_L2SP_127036_20180801_20200831_02_T1``) or, for a STAC item
        whose asset names give none, its item id.
    sensor : {'TM', 'ETM+', 'OLI'}
    bands : tuple of (band name, path or href)
        Every band of :data:`SENSOR_BANDS` for ``sensor``.
    qa : str
        ``QA_PIXEL`` path or href.
    cloud : float
        Scene cloud cover (percent; NaN when unknown).
    """

    scene_id: str
    sensor: str
    bands: tuple[tuple[str, str], ...]
    qa: str
    cloud: float = float("nan")

    @property
    def band_files(self) -> dict[str, str]:
        """Band name -> path or href."""
        return dict(self.bands)

    @property
    def path_row(self) -> str:
        """WRS-2 path/row ``PPPRRR`` from the scene id (the item id when the id has none)."""
        return wrs_path_row(self.scene_id)


def wrs_path_row(scene_id: str) -> str:
    """WRS-2 path/row ``PPPRRR`` of a Collection-2 id (``LC08_L2SP_127036_...`` -> ``127036``); the id
    itself when it has no such field (a scene then is its own path/row)."""
    parts = scene_id.split("_")
    return parts[2] if len(parts) > 2 and re.fullmatch(r"\d{6}", parts[2]) else scene_id


def cap_per_path_row(scenes: "Sequence[SceneAssets]", max_scenes: int | None) -> "list[SceneAssets]":
    """At most ``max_scenes`` scenes per WRS-2 path/row (least cloudy first, unknown cloud last, then by
    id); all of them when ``max_scenes`` is None or 0. The result is sorted by scene id."""
    ordered = sorted(scenes, key=lambda s: (math.inf if math.isnan(s.cloud) else s.cloud, s.scene_id))
    kept, per = [], {}
    for s in ordered:
        n = per.get(s.path_row, 0)
        if max_scenes and n >= max_scenes:
            continue
        per[s.path_row] = n + 1
        kept.append(s)
    return sorted(kept, key=lambda s: s.scene_id)
