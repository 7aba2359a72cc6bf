"""The sensors that observe the synthetic world: PANDA-like DN, Landsat Collection-2 L2, Luojia-01, DEM tiles.

Pure functions from the hidden scene (:mod:`pandafine.synthetic.scene`) to what each product
would record; :mod:`pandafine.sources.synthetic` writes them in the real products' formats.

The conversions here (Luojia-01 DN <-> radiance, Collection-2 scale/offset and QA bits, Copernicus
tile names) are written again, on purpose, rather than imported from :mod:`pandafine.sensors` and
:mod:`pandafine.sources.dem`: the synthetic scene is the independent oracle the pipeline's readers
are tested against, so a mistake in a reader cannot cancel out against the same mistake here.
``tests/synthetic/test_oracle.py`` holds the two implementations equal on known values.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from affine import Affine

from pandafine.core.channels import LANDSAT_BANDS
from pandafine.core.grid import Grid
from pandafine.sensors.landsat import ROY2016_OLS
from pandafine.synthetic.scene import (
    _S_LANDSAT,
    _S_LUOJIA,
    _S_PANDA,
    FIRST_YEAR,
    SyntheticScene,
    _rng,
    block_mean,
    smooth_random_field,
)

#: Roy et al. (2016) OLS: OLI = slope * TM/ETM+ + intercept (the calibration stage's constants).
ROY_2016_OLS = ROY2016_OLS

#: Collection-2 Level-2 surface reflectance scaling: rho = DN * scale + offset.
C2_SCALE, C2_OFFSET = 0.0000275, -0.2
#: Landsat surface-reflectance noise (standard deviation, reflectance units).
LANDSAT_NOISE = 0.003

#: QA_PIXEL bit numbers (Collection 2).
QA_FILL, QA_DILATED, QA_CIRRUS, QA_CLOUD, QA_SHADOW, QA_SNOW, QA_CLEAR, QA_WATER = range(8)

CLOUD_REFLECTANCE = (0.42, 0.42, 0.43, 0.44, 0.47, 0.38, 0.28)

#: Sensors: file-name prefix, band numbers and the OLI-equivalent band each number holds.
SENSORS = {
    "TM": ("LT05", (1, 2, 3, 4, 5, 7), ("blue", "green", "red", "nir", "swir1", "swir2")),
    "ETM": ("LE07", (1, 2, 3, 4, 5, 7), ("blue", "green", "red", "nir", "swir1", "swir2")),
    "OLI": ("LC08", (1, 2, 3, 4, 5, 6, 7), LANDSAT_BANDS),
}
#: Landsat 7 scan-line corrector failure: ETM+ scenes after this date have gaps.
SLC_FAILURE = dt.date(2003, 5, 31)

#: PANDA-like DN curve: DN = min(63, round(PANDA_DN_SCALE * (1 - exp(-gain * L / PANDA_L_SAT)))).
PANDA_DN_SCALE = 66.0
PANDA_L_SAT = 2.5e-5
PANDA_NODATA = 255
PANDA_MARGIN_CELLS = 2

#: Luojia-01: L = DN^1.5 * LUOJIA_SCALE.
LUOJIA_SCALE = 1e-10
LUOJIA_PIXEL_RANGE = (0.0012, 0.0014)  # degrees

#: Copernicus GLO-90: 3 arc-second pixels.
DEM_RES_DEG = 3.0 / 3600.0


# --------------------------------------------------------------------------------------------
# PANDA-like DMSP years
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PandaYear:
    """Sensor state of one PANDA year: gain drift, overglow blur (Gaussian sigma, metres) and geolocation error.

    ``shift_m = (dx, dy)`` (metres, x east, y north): the cell georeferenced at
    (x, y) shows the ground at (x + dx, y + dy), as DMSP-OLS composites are
    misregistered by up to a few kilometres from year to year and satellite to
    satellite (what MMNTLSR's spatial alignment is for). ``(0, 0)`` unless
    ``synthetic.panda_shift_m`` is set.
    """

    year: int
    gain: float
    blur_sigma: float
    shift_m: tuple[float, float] = (0.0, 0.0)


def panda_year(seed: int, year: int, max_shift_m: float = 0.0) -> PandaYear:
    """The PANDA sensor state of ``year``: a slow gain oscillation plus yearly jitter, blur 1.1–1.9 km.

    ``max_shift_m`` > 0 adds a geolocation error drawn uniformly in
    [-max_shift_m, max_shift_m] per axis (its own random stream: gain and blur
    are those of ``max_shift_m = 0``).
    """
    phase = float(_rng(seed, _S_PANDA).uniform(0, 2 * math.pi))
    r = _rng(seed, _S_PANDA, year)
    gain = (1 + 0.04 * math.sin(2 * math.pi * (year - FIRST_YEAR) / 9.0 + phase)) * math.exp(0.025 * r.standard_normal())
    sigma = float(np.clip(1500 + 200 * r.standard_normal(), 1100, 1900))
    if max_shift_m < 0:
        raise ValueError(f"synthetic.panda_shift_m {max_shift_m!r}: expected >= 0 metres")
    shift = (0.0, 0.0)
    if max_shift_m > 0:
        dx, dy = _rng(seed, _S_PANDA, year, 1).uniform(-max_shift_m, max_shift_m, 2)
        shift = (float(dx), float(dy))
    return PandaYear(int(year), float(gain), sigma, shift)


def panda_dn(radiance: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Saturating PANDA DN curve: 0 for the dark background, 63 from ~7e-5 W m-2 sr-1 um-1 up."""
    lin = PANDA_DN_SCALE * -np.expm1(-gain * np.maximum(radiance, 0) / PANDA_L_SAT)
    return np.clip(np.rint(lin), 0, 63).astype(np.uint8)


def panda_grid(grid: Grid, margin: int = PANDA_MARGIN_CELLS) -> Grid:
    """The PANDA 1 km lattice (``grid.anchor`` origin) over the working grid plus ``margin`` cells."""
    cell = grid.pixel_size * grid.factor
    t = grid.transform
    return Grid(grid.crs, Affine(cell, 0, t.c - margin * cell, 0, -cell, t.f + margin * cell),
                math.ceil(grid.width / grid.factor) + 2 * margin, math.ceil(grid.height / grid.factor) + 2 * margin, 1)


def panda_fine_grid(pgrid: Grid, sub: int, pad: int) -> Grid:
    """A grid ``sub`` times finer than the PANDA grid, ``pad`` cells wider on every side."""
    cell = pgrid.pixel_size
    t = pgrid.transform
    return Grid(pgrid.crs, Affine(cell / sub, 0, t.c - pad * cell, 0, -cell / sub, t.f + pad * cell),
                (pgrid.width + 2 * pad) * sub, (pgrid.height + 2 * pad) * sub, 1)


def panda_pad_cells(cell: float, max_sigma: float = 1900.0) -> int:
    """Cells of margin needed so the overglow blur does not see the edge of the fine grid."""
    return int(math.ceil(4 * max_sigma / cell))


def simulate_panda(fine_radiance: np.ndarray, params: PandaYear, cell: float, sub: int, pad: int) -> np.ndarray:
    """PANDA DN from radiance on the fine padded grid: overglow blur, 1 km block mean, DN curve."""
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(fine_radiance.astype(np.float64), params.blur_sigma / (cell / sub), mode="nearest",
                              truncate=4.0)
    dx, dy = params.shift_m
    if dx or dy:  # out[r, c] = blurred at (r - dy, c + dx) fine pixels: the cell shows the ground at (x+dx, y+dy)
        from scipy.ndimage import shift as nd_shift

        if max(abs(dx), abs(dy)) > pad * cell:
            raise ValueError(f"PANDA shift {params.shift_m} m exceeds the simulation margin of {pad * cell:g} m")
        blurred = nd_shift(blurred, (dy / (cell / sub), -dx / (cell / sub)), order=1, mode="nearest")
    core = blurred[pad * sub: blurred.shape[0] - pad * sub, pad * sub: blurred.shape[1] - pad * sub]
    return panda_dn(block_mean(core, sub), params.gain)


# --------------------------------------------------------------------------------------------
# Landsat Collection-2 L2
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LandsatSceneSpec:
    """Everything random about one synthetic Landsat acquisition."""

    scene_id: str
    sensor: str           # TM | ETM | OLI
    date: str             # acquisition date, ISO
    year: int
    index: int            # scene number within the year
    cloud_cover: float    # target cloud fraction
    cirrus_cover: float   # target cirrus fraction (OLI only)
    shadow_offset: tuple[float, float]  # cloud shadow displacement (dx, dy) metres
    slc_off: bool
    track_offset: float   # across-track distance (m) of the region centre from the scene centre
    scan_phase: float     # metres

    @property
    def bands(self) -> tuple[int, ...]:
        return SENSORS[self.sensor][1]

    @property
    def band_names(self) -> tuple[str, ...]:
        return SENSORS[self.sensor][2]


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing ``(lon, lat)``."""
    zone = int(math.floor((lon + 180) / 6)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def wrs2_path_row(lon: float, lat: float) -> tuple[int, int]:
    """Approximate WRS-2 path/row of a point (descending daytime node; good to about one path/row)."""
    path = int(round(1 + ((-64.6 - (lon - 0.235 * lat)) % 360) / (360 / 233))) % 233 or 233
    row = int(min(max(round(60 - lat / 1.43), 1), 248))
    return path, row


def landsat_sensors(year: int, n: int) -> list[str]:
    """Sensor of each of ``n`` scenes in ``year``: TM to 1998, TM+ETM+ 1999–2011, ETM+ 2012, OLI(+ETM+) from 2013."""
    out = []
    for i in range(n):
        if year <= 1998:
            out.append("TM")
        elif year <= 2011:
            out.append("TM" if i % 2 == 0 else "ETM")
        elif year == 2012:
            out.append("ETM")
        else:
            out.append("ETM" if i % 3 == 2 else "OLI")
    return out


def landsat_grid(grid: Grid, resolution: float, margin: float | None = None) -> Grid:
    """The UTM grid of the synthetic scenes: the working grid's extent plus a margin, pixel centres on
    multiples of ``resolution`` (as Collection-2 scenes)."""
    from pyproj import Transformer

    lon_c, lat_c = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        *((grid.bounds[0] + grid.bounds[2]) / 2, (grid.bounds[1] + grid.bounds[3]) / 2))
    epsg = utm_epsg(lon_c, lat_c)
    from rasterio.crs import CRS as RioCRS
    from rasterio.warp import transform_bounds

    l, b, r, t = transform_bounds(RioCRS.from_user_input(grid.crs), RioCRS.from_epsg(epsg), *grid.bounds,
                                  densify_pts=21)
    m = 10 * resolution if margin is None else margin
    half = resolution / 2
    left = math.floor((l - m - half) / resolution) * resolution + half
    top = math.ceil((t + m - half) / resolution) * resolution + half
    right = math.ceil((r + m - half) / resolution) * resolution + half
    bottom = math.floor((b - m - half) / resolution) * resolution + half
    return Grid(f"EPSG:{epsg}", Affine(resolution, 0, left, 0, -resolution, top),
                int(round((right - left) / resolution)), int(round((top - bottom) / resolution)), 1)


def landsat_scene_specs(scene: SyntheticScene, year: int, n: int, lon: float, lat: float) -> list[LandsatSceneSpec]:
    """The ``n`` acquisitions of ``year`` over a region centred at ``(lon, lat)``."""
    rng = _rng(scene.seed, _S_LANDSAT, year)
    path, row = wrs2_path_row(lon, lat)
    specs = []
    used: set[int] = set()
    for i, sensor in enumerate(landsat_sensors(year, n)):
        lo = 200 if (sensor == "ETM" and year == 1999) else 120 if (sensor == "OLI" and year == 2013) else 90
        while True:
            doy = int(rng.integers(lo, 300))
            if all(abs(doy - u) >= 8 for u in used):
                break
        used.add(doy)
        date = dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)
        proc = max(dt.date(2020, 9, 1), date + dt.timedelta(days=30)) + dt.timedelta(days=int(rng.integers(0, 300)))
        prefix = SENSORS[sensor][0]
        scene_id = f"{prefix}_L2SP_{path:03d}{row:03d}_{date:%Y%m%d}_{proc:%Y%m%d}_02_T1"
        height = rng.uniform(1000, 3000)
        sun_elev = math.radians(rng.uniform(40, 65))
        sun_az = math.radians(rng.uniform(120, 150))  # morning sun from the south-east
        shadow = height / math.tan(sun_elev)
        specs.append(LandsatSceneSpec(
            scene_id=scene_id, sensor=sensor, date=date.isoformat(), year=int(year), index=i,
            cloud_cover=float(rng.uniform(0.1, 0.4)),
            cirrus_cover=float(rng.uniform(0.0, 0.08)) if sensor == "OLI" else 0.0,
            shadow_offset=(float(-shadow * math.sin(sun_az)), float(-shadow * math.cos(sun_az))),
            slc_off=bool(sensor == "ETM" and date > SLC_FAILURE),
            track_offset=float(rng.choice([-1, 1]) * rng.uniform(30000, 80000)),
            scan_phase=float(rng.uniform(0, 960))))
    return specs


def slc_gap_mask(grid: Grid, spec: LandsatSceneSpec) -> np.ndarray:
    """Scan-line-corrector-off gaps: wedges every 960 m along track, 0 wide at the scene centre, 420 m at
    the edges, stripes tilted 12 degrees as the descending ground track."""
    t = grid.transform
    x = (np.arange(grid.width) + 0.5 - grid.width / 2) * t.a
    y = (np.arange(grid.height) + 0.5 - grid.height / 2) * t.e
    psi = math.radians(12.0)
    along = y[:, None] * math.cos(psi) + x[None, :] * math.sin(psi) + spec.scan_phase
    across = x[None, :] * math.cos(psi) - y[:, None] * math.sin(psi) + spec.track_offset
    width = 420.0 * np.minimum(np.abs(across) / 92500.0, 1.0)
    return np.mod(along, 960.0) < width


def _shift(mask: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """``mask`` moved by (dr, dc) pixels, zero-filled."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(dr) >= h or abs(dc) >= w:
        return out
    rs, rd = (slice(0, h - dr), slice(dr, h)) if dr >= 0 else (slice(-dr, h), slice(0, h + dr))
    cs, cd = (slice(0, w - dc), slice(dc, w)) if dc >= 0 else (slice(-dc, w), slice(0, w + dc))
    out[rd, cd] = mask[rs, cs]
    return out


def dilate(mask: np.ndarray, n: int) -> np.ndarray:
    """Binary dilation of a 2-D mask by a (2n+1) x (2n+1) square (separable shifted ORs)."""
    rows = mask.copy()
    for k in range(1, n + 1):
        rows[k:] |= mask[:-k]
        rows[:-k] |= mask[k:]
    out = rows.copy()
    for k in range(1, n + 1):
        out[:, k:] |= rows[:, :-k]
        out[:, :-k] |= rows[:, k:]
    return out


def landsat_qa(fill: np.ndarray, cloud: np.ndarray, dilated: np.ndarray, shadow: np.ndarray,
               cirrus: np.ndarray | None, water: np.ndarray) -> np.ndarray:
    """Collection-2 QA_PIXEL from masks (cirrus ``None`` for TM/ETM+, which have no cirrus band).

    Bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 shadow, 6 clear (no cloud, no dilated cloud),
    7 water; confidences (bits 8-15) low, high where cloud, shadow or cirrus is flagged. Fill pixels are
    exactly 1, as in real files (e.g. OLI clear land 21824, cloud 22280, dilated 21762, shadow 23888).
    """
    u = np.uint16
    qa = np.full(cloud.shape, (1 << 8) | (1 << 10) | (1 << 12), u)  # low cloud, shadow, snow confidence
    if cirrus is not None:
        qa |= u(1 << 14)
        qa |= cirrus.astype(u) * u((3 << 14) | (1 << QA_CIRRUS))
    qa |= dilated.astype(u) * u(1 << QA_DILATED)
    qa |= cloud.astype(u) * u((3 << 8) | (1 << QA_CLOUD))
    qa |= shadow.astype(u) * u((3 << 10) | (1 << QA_SHADOW))
    clear = ~(cloud | dilated)
    qa |= clear.astype(u) * u(1 << QA_CLEAR)
    qa |= (clear & water).astype(u) * u(1 << QA_WATER)
    return np.where(fill, u(1 << QA_FILL), qa)


def simulate_landsat(truth: np.ndarray, water: np.ndarray, pixel_size: float, grid: Grid,
                     spec: LandsatSceneSpec, seed: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """One Collection-2 L2 scene from the OLI-equivalent truth (7, H, W) on its UTM grid.

    TM/ETM+ reflectance is the inverse of the Roy et al. (2016) OLS mapping (so harmonizing recovers the
    truth); Gaussian noise ``LANDSAT_NOISE`` (per band, independent per pixel: one N(0, 1) sequence
    per scene, rotated by a distinct random offset for each band); clouds from a thresholded smooth field (bright,
    semi-transparent at the edges) with dilated-cloud rings, displaced dark shadows and, for OLI, cirrus;
    ETM+ SLC-off gaps are fill.

    Returns
    -------
    bands : dict
        Band number -> uint16 DN (0 = fill).
    qa : ndarray
        uint16 QA_PIXEL.
    """
    rng = _rng(seed, _S_LANDSAT, spec.year, spec.index + 1)
    shape = truth.shape[1:]
    npx = shape[0] * shape[1]
    names = spec.band_names
    if spec.sensor == "OLI":
        slope = np.ones(len(names), np.float32)
        icpt = np.zeros(len(names), np.float32)
        src = list(range(7))
    else:
        slope = np.asarray([ROY_2016_OLS[b][0] for b in names], np.float32)
        icpt = np.asarray([ROY_2016_OLS[b][1] for b in names], np.float32)
        src = [LANDSAT_BANDS.index(b) for b in names]
    offsets = rng.choice(npx, len(names), replace=False)
    pool = rng.standard_normal(npx, dtype=np.float32)
    pool *= np.float32(LANDSAT_NOISE)

    f = smooth_random_field(rng, shape, pixel_size, ((2500.0, 0.75), (700.0, 0.25)))
    thr = np.float32(np.quantile(f[::4, ::4], 1 - spec.cloud_cover))
    cloud = f > thr
    alpha = np.where(cloud, np.clip(np.float32(0.35) + (f - thr) / np.float32(0.8), 0, 1), np.float32(0))
    dilated = dilate(cloud, max(1, int(round(90.0 / pixel_size)))) & ~cloud
    shadow = _shift(cloud, int(round(-spec.shadow_offset[1] / pixel_size)),
                    int(round(spec.shadow_offset[0] / pixel_size))) & ~cloud
    cirrus = None
    extra = np.zeros(shape, np.float32)
    if spec.sensor == "OLI":
        cirrus = np.zeros(shape, bool)
        if spec.cirrus_cover > 0:
            g = smooth_random_field(rng, shape, pixel_size, ((4000.0, 1.0),))
            cirrus = g > np.float32(np.quantile(g[::4, ::4], 1 - spec.cirrus_cover))
            extra = cirrus * np.float32(0.02)
    # observed = ((rho * shadow_factor + cirrus) * (1 - alpha) + alpha * cloud) ; DN = (observed + 0.2) / scale
    keep = (1 - alpha) * np.where(shadow, np.float32(0.3), np.float32(1.0))
    extra *= 1 - alpha
    extra -= np.float32(C2_OFFSET)
    fill = slc_gap_mask(grid, spec) if spec.slc_off else None
    valid = None if fill is None else (~fill).astype(np.uint16)
    inv_scale = np.float32(1.0 / C2_SCALE)
    bands = {}
    for b, num in enumerate(spec.bands):
        rho = (truth[src[b]] - icpt[b]) * (1 / slope[b])
        flat, k = rho.reshape(-1), int(offsets[b])  # noise = the pool rotated by k
        flat[: npx - k] += pool[k:]
        flat[npx - k:] += pool[:k]
        rho *= keep
        rho += alpha * np.float32(CLOUD_REFLECTANCE[LANDSAT_BANDS.index(names[b])])
        rho += extra
        rho *= inv_scale
        np.rint(rho, out=rho)
        np.clip(rho, 1, 65535, out=rho)
        dn = rho.astype(np.uint16)
        if valid is not None:
            dn *= valid
        bands[num] = dn
    return bands, landsat_qa(fill if fill is not None else np.zeros(shape, bool), cloud, dilated, shadow,
                             cirrus, water)


# --------------------------------------------------------------------------------------------
# Luojia-01 frames
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LuojiaFrame:
    """One synthetic Luojia-01 frame and its recorded errors.

    ``shift_px = (dcol, drow)``: the pixel georeferenced at (col, row) shows the ground at
    (col + dcol, row + drow) of the same grid. ``footprint``: TL, TR, BR, BL corners (lon, lat).
    ``hot_pixels``: (row, col, DN).
    """

    frame_id: str
    year: int
    imaging_time: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    footprint: tuple[tuple[float, float], ...]
    gain: float
    shift_px: tuple[float, float]
    dark_sigma: float
    hot_pixels: tuple[tuple[int, int, int], ...]

    @property
    def grid(self) -> Grid:
        return Grid("EPSG:4326", Affine(*self.transform), self.width, self.height, 1)

    @property
    def content_grid(self) -> Grid:
        """The grid whose pixel centres the frame's pixels actually show (georeference + shift)."""
        return Grid("EPSG:4326", Affine(*self.transform) @ Affine.translation(*self.shift_px),
                    self.width, self.height, 1)


def frame_layout(n: int, width: float, height: float) -> list[int]:
    """Frames per row for ``n`` frames over an area of ``width x height`` (rows near-square cells)."""
    rows = min(max(int(round(math.sqrt(n * height / width))), 1), n)
    return [n // rows + (1 if r < n % rows else 0) for r in range(rows)]


def footprint_mask(transform: Affine | Sequence[float], width: int, height: int,
                   quad: Sequence[tuple[float, float]]) -> np.ndarray:
    """True at pixels whose centre lies inside the convex quad (TL, TR, BR, BL, clockwise in lon/lat)."""
    t = transform if isinstance(transform, Affine) else Affine(*transform)
    lon = t.c + (np.arange(width) + 0.5) * t.a
    lat = t.f + (np.arange(height) + 0.5) * t.e
    return points_in_quad(lon[None, :], lat[:, None], quad)


def points_in_quad(lon: np.ndarray, lat: np.ndarray, quad: Sequence[tuple[float, float]]) -> np.ndarray:
    """Inside test for a convex quad given clockwise (TL, TR, BR, BL); broadcasts ``lon``/``lat``."""
    inside = np.ones(np.broadcast(lon, lat).shape, bool)
    for (ax, ay), (bx, by) in zip(quad, list(quad[1:]) + [quad[0]]):
        inside &= (bx - ax) * (lat - ay) - (by - ay) * (lon - ax) <= 1e-12
    return inside


def luojia_frames(scene: SyntheticScene, year: int, n_frames: int,
                  area: tuple[float, float, float, float]) -> list[LuojiaFrame]:
    """``n_frames`` overlapping frames (~25% overlap, slightly rotated footprints) covering ``area``
    (west, south, east, north degrees), with per-frame gain (0.85–1.15), sub-pixel shift, dark noise
    level and hot pixels."""
    west, south, east, north = area
    lat0 = 0.5 * (south + north)
    kx = math.cos(math.radians(lat0))  # local metric: X = lon * kx, Y = lat
    layout = frame_layout(n_frames, (east - west) * kx, north - south)
    rng = _rng(scene.seed, _S_LUOJIA, year)
    nights = [dt.datetime(year, 1, 1, 14, 20) + dt.timedelta(days=int(d), seconds=int(s))
              for d, s in zip(rng.choice(np.arange(150, 300), 2, replace=False), rng.integers(0, 1800, 2))]
    orbits = [int(o) for o in rng.integers(1000, 9999, 2)]
    frames = []
    idx = 0
    row_h = (north - south) / len(layout)
    for r, k in enumerate(layout):
        y1 = north - r * row_h
        y0 = y1 - row_h
        col_w = (east - west) / k
        for j in range(k):
            x0, x1 = west + j * col_w, west + (j + 1) * col_w
            ex = [rng.uniform(0.15, 0.22) for _ in range(4)]  # left, right, bottom, top extension
            X0, X1 = (x0 - ex[0] * col_w) * kx, (x1 + ex[1] * col_w) * kx
            Y0, Y1 = y0 - ex[2] * row_h, y1 + ex[3] * row_h
            mx, my = 0.5 * (X0 + X1), 0.5 * (Y0 + Y1)
            hw, hh = 0.5 * (X1 - X0), 0.5 * (Y1 - Y0)
            th = math.radians(rng.uniform(1, 4)) * rng.choice([-1, 1])
            c, s = math.cos(th), math.sin(th)
            W = hw * c + hh * abs(s)
            H = hw * abs(s) + hh * c
            quad = []
            for px, py in ((-W, H), (W, H), (W, -H), (-W, -H)):
                qx, qy = mx + px * c - py * s, my + px * s + py * c
                quad.append((qx / kx, qy))
            p = rng.uniform(*LUOJIA_PIXEL_RANGE)
            lons, lats = [q[0] for q in quad], [q[1] for q in quad]
            tr = (p, 0.0, min(lons) - 2 * p, 0.0, -p, max(lats) + 2 * p)
            width = int(math.ceil((max(lons) - min(lons)) / p)) + 4
            height = int(math.ceil((max(lats) - min(lats)) / p)) + 4
            inside = np.flatnonzero(footprint_mask(tr, width, height, quad))
            n_hot = max(1, int(round(rng.uniform(5e-4, 1e-3) * inside.size)))
            hot_idx = np.sort(rng.choice(inside, n_hot, replace=False))
            hot_dn = rng.integers(200_000, 1_000_000, n_hot)
            night = int(rng.integers(0, 2))
            when = nights[night] + dt.timedelta(seconds=8 * idx)
            seq = 10 + 3 * idx + night
            frame_id = f"LuoJia1-01_LR{nights[night]:%Y%m%d}{orbits[night]:04d}_{when:%Y%m%d%H%M%S}_HDR_{seq:04d}"
            shift = rng.uniform(-0.6, 0.6, 2)
            frames.append(LuojiaFrame(
                frame_id=frame_id, year=int(year), imaging_time=f"{when:%Y-%m-%dT%H:%M:%S}",
                transform=tuple(float(v) for v in tr), width=width, height=height,
                footprint=tuple((float(a), float(b)) for a, b in quad), gain=float(rng.uniform(0.85, 1.15)),
                shift_px=(float(shift[0]), float(shift[1])), dark_sigma=float(rng.uniform(4, 12)),
                hot_pixels=tuple((int(i // width), int(i % width), int(d)) for i, d in zip(hot_idx, hot_dn))))
            idx += 1
    return frames


def luojia_dn(radiance: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Noise-free Luojia DN (float): (L * gain / 1e-10) ** (2/3)."""
    return (np.maximum(radiance, 0) * (gain / LUOJIA_SCALE)) ** (2.0 / 3.0)


def luojia_radiance(dn: np.ndarray) -> np.ndarray:
    """Radiance of Luojia DN: L = DN**1.5 * 1e-10."""
    return np.asarray(dn, np.float64) ** 1.5 * LUOJIA_SCALE


def simulate_luojia(radiance: np.ndarray, frame: LuojiaFrame, seed: int, index: int) -> np.ndarray:
    """INT32 DN of a frame from the true radiance on its content grid: gain error, dark noise
    (DN >= 1 inside the footprint), hot pixels, 0 outside the footprint."""
    rng = _rng(seed, _S_LUOJIA, frame.year, index + 1)
    dn = luojia_dn(radiance.astype(np.float64), frame.gain)
    dn += rng.standard_normal(dn.shape) * frame.dark_sigma
    out = np.clip(np.rint(dn), 1, 2 ** 31 - 1).astype(np.int32)
    out[~footprint_mask(frame.transform, frame.width, frame.height, frame.footprint)] = 0
    for r, c, v in frame.hot_pixels:
        out[r, c] = v
    return out


def luojia_meta_xml(frame: LuojiaFrame) -> str:
    """The frame's ``_meta.xml``: footprint corners and imaging time (UTC)."""
    (tlo, tla), (tro, tra), (bro, bra), (blo, bla) = frame.footprint
    items = [("ProductID", frame.frame_id), ("SatelliteID", "LuoJia1-01"), ("SensorID", "LR"),
             ("ImagingTime", frame.imaging_time),
             ("TopLeftLatitude", tla), ("TopLeftLongitude", tlo), ("TopRightLatitude", tra),
             ("TopRightLongitude", tro), ("BottomRightLatitude", bra), ("BottomRightLongitude", bro),
             ("BottomLeftLatitude", bla), ("BottomLeftLongitude", blo),
             ("ImageWidth", frame.width), ("ImageHeight", frame.height)]
    body = "".join(f"  <{k}>{v:.8f}</{k}>\n" if isinstance(v, float) else f"  <{k}>{v}</{k}>\n" for k, v in items)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<ProductMetaData>\n{body}</ProductMetaData>\n'


# --------------------------------------------------------------------------------------------
# Copernicus-like DEM tiles
# --------------------------------------------------------------------------------------------

def dem_tile_name(lat: int, lon: int) -> str:
    """Copernicus GLO-90 file name of the 1x1 degree tile whose lower-left corner is (lat, lon)."""
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return f"Copernicus_DSM_COG_30_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM.tif"


def dem_tiles(area: tuple[float, float, float, float]) -> list[tuple[int, int]]:
    """(lat, lon) lower-left corners of the 1-degree tiles intersecting ``area`` (west, south, east, north)."""
    west, south, east, north = area
    return [(la, lo) for la in range(math.floor(south), math.ceil(north))
            for lo in range(math.floor(west), math.ceil(east))]


def dem_tile_grid(lat: int, lon: int) -> Grid:
    """The pixel lattice of a GLO-90 tile: 3" rows, columns widened poleward of 50 degrees, pixel
    centres on the whole-degree lines (so the corner is half a pixel outside the named corner)."""
    band = max(abs(lat), abs(lat + 1))
    ncols = 1200 if band <= 50 else 800 if band <= 60 else 600 if band <= 70 else 400 if band <= 80 \
        else 240 if band <= 85 else 120
    rx, ry = 1.0 / ncols, DEM_RES_DEG
    return Grid("EPSG:4326", Affine(rx, 0, lon - rx / 2, 0, -ry, lat + 1 + ry / 2), ncols, 1200, 1)


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------

def scene_summary(scene: SyntheticScene, years: Sequence[int], landsat: Mapping[int, Sequence[LandsatSceneSpec]],
                  luojia: Mapping[int, Sequence[LuojiaFrame]], grid: Grid,
                  panda_shift_m: float = 0.0) -> dict[str, Any]:
    """JSON-ready record of the hidden parameters (for ``scene.json``)."""
    from pyproj import Transformer

    to_ll = Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True)
    cities = []
    for c in scene.cities:
        d = asdict(c)
        d["lon"], d["lat"] = map(float, to_ll.transform(c.x, c.y))
        cities.append(d)
    spots = []
    for s in scene.spots:
        d = asdict(s)
        d["lon"], d["lat"] = map(float, to_ll.transform(s.x, s.y))
        spots.append(d)
    return {
        "seed": scene.seed,
        "units": {"radiance": "W m-2 sr-1 um-1", "coordinates": "grid CRS metres", "lengths": "metres"},
        "grid": grid.to_dict(),
        "cities": cities,
        "roads": [asdict(r) for r in scene.roads],
        "spots": spots,
        "river": asdict(scene.river),
        "terrain": asdict(scene.terrain),
        "panda": {str(y): asdict(panda_year(scene.seed, y, panda_shift_m)) for y in years},
        "landsat": {str(y): [asdict(s) for s in specs] for y, specs in landsat.items()},
        "luojia": {str(y): [dict(asdict(f), file=f"{y}/{f.frame_id}.tif", meta=f"{y}/{f.frame_id}_meta.xml")
                            for f in frames] for y, frames in luojia.items()},
        "conventions": {
            "luojia_shift_px": "(dcol, drow): pixel (col, row) shows the ground at (col+dcol, row+drow)",
            "luojia_gain": "DN = round((L * gain / 1e-10) ** (2/3) + dark noise); L = DN**1.5 * 1e-10 / gain",
            "luojia_hot_pixels": "(row, col, DN)",
            "panda": "DN = min(63, round(66 * (1 - exp(-gain * blur(L) / 2.5e-5)))) on 1 km block means",
            "panda_shift_m": "(dx, dy): the cell georeferenced at (x, y) shows the ground at (x+dx, y+dy)",
            "landsat": "TM/ETM+ reflectance = (OLI - intercept) / slope (Roy et al. 2016 OLS)",
        },
    }
