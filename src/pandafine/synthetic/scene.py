"""The synthetic demo scene: a hidden true world and the sensors that observe it.

The world is a set of continuous functions of projected coordinates (``x, y`` in
the working-grid CRS, metres) and year, so it can be evaluated on any grid
(pixel centres of other CRSs are transformed into the grid CRS with pyproj):

* **cities** grow from 1984 to 2020: each pixel has a static *urbanization
  year* (when the growing city front, roughened by a Fourier texture, reaches
  it); the urban (impervious) fraction is ``density * sigmoid((year - t_urban)/tau)``.
  City interiors carry a street grid and texture, so urban fraction has detail
  at 30–125 m;
* **roads** between cities (and highways leaving the region) with ribbon
  development that widens over the years;
* a few small, very bright **spots** (night markets, landmarks) that appear in
  a given year;
* a **river**, a vegetation/soil field and a **DEM** with cities on flat valley
  floors and mountains away from them.

Urban fraction drives both night-time radiance (W m-2 sr-1 um-1; city cores
~3e-4, spots ~2e-3, dark background ~1e-7) and Landsat surface reflectance
(linear mixing of urban / vegetation / soil / water endmember spectra), so
Landsat carries the fine structure that PANDA lacks.

:mod:`pandafine.synthetic.observe` simulates the sensors that observe it
(PANDA-like DN, Landsat Collection-2 L2 DN and QA_PIXEL, Luojia-01 DN,
Copernicus-like DEM tiles); :mod:`pandafine.sources.synthetic` writes the files.
Everything is deterministic for ``synthetic.seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from pandafine.core.grid import Grid, grid_from_config

# --------------------------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------------------------

#: Radiance of a city core in 2020 (W m-2 sr-1 um-1).
RADIANCE_CITY_CORE = 3e-4
#: Typical radiance of the dark background.
RADIANCE_BACKGROUND = 1e-7
#: Radiance of ribbon development along roads (per unit urban fraction) and of road pavement.
RADIANCE_RIBBON = 2.5e-5
RADIANCE_ROAD = 6e-5

FIRST_YEAR, LAST_YEAR = 1984, 2020
#: Smallest 2020 radius (m) of the main city, so that PANDA saturates on it even in a tiny region.
MIN_CITY_RADIUS = 3000.0
#: Width (years) of the urbanization sigmoid.
URBAN_TAU = 1.0

#: Endmember spectra, OLI bands coastal, blue, green, red, nir, swir1, swir2.
ENDMEMBERS = {
    "urban": (0.11, 0.12, 0.14, 0.16, 0.21, 0.23, 0.21),
    "vegetation": (0.025, 0.03, 0.065, 0.035, 0.38, 0.19, 0.085),
    "soil": (0.07, 0.08, 0.12, 0.17, 0.25, 0.33, 0.27),
    "water": (0.06, 0.055, 0.06, 0.035, 0.015, 0.008, 0.005),
}
# random streams (second SeedSequence word)
_S_SCENE, _S_PANDA, _S_LANDSAT, _S_LUOJIA, _S_YEAR = 1, 2, 3, 4, 5


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent, reproducible generator for ``(seed, *keys)``."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


# --------------------------------------------------------------------------------------------
# textures
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FourierTexture:
    """A smooth random field: a sum of cosine modes with unit standard deviation.

    Evaluated at coordinates in kilometres; wavenumbers in rad/km.
    """

    kx: tuple[float, ...]
    ky: tuple[float, ...]
    phase: tuple[float, ...]
    amp: tuple[float, ...]

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, wavelength_min: float, wavelength_max: float,
               slope: float = 1.0) -> "FourierTexture":
        """``n`` modes with wavelengths (metres) log-uniform in a range; amplitude ~ wavelength**slope."""
        lam = np.exp(rng.uniform(math.log(wavelength_min), math.log(wavelength_max), n)) / 1000.0
        theta = rng.uniform(0, math.pi, n)
        k = 2 * math.pi / lam
        amp = lam ** slope
        amp = amp / math.sqrt(float(np.sum(amp ** 2)) / 2.0)
        return cls(tuple(map(float, k * np.cos(theta))), tuple(map(float, k * np.sin(theta))),
                   tuple(map(float, rng.uniform(0, 2 * math.pi, n))), tuple(map(float, amp)))

    def __call__(self, xk: np.ndarray, yk: np.ndarray) -> np.ndarray:
        """Field value at ``(xk, yk)`` (float32 arrays in km)."""
        out = np.zeros(xk.shape, np.float32)
        t = np.empty(xk.shape, np.float32)
        t2 = np.empty(xk.shape, np.float32)
        for kx, ky, ph, a in zip(self.kx, self.ky, self.phase, self.amp):
            np.multiply(xk, np.float32(kx), out=t)
            np.multiply(yk, np.float32(ky), out=t2)
            t += t2
            t += np.float32(ph)
            np.cos(t, out=t)
            t *= np.float32(a)
            out += t
        return out


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


# --------------------------------------------------------------------------------------------
# scene parameters
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class City:
    """A growing city: an ellipse whose radius grows from ``r1984`` to ``r2020`` (metres)."""

    name: str
    x: float
    y: float
    r1984: float
    r2020: float
    aspect: float          # minor / major axis
    angle: float           # major-axis direction (radians from +x)
    core_radiance: float   # radiance of the core in 2020
    brightness_1984: float # fraction of the 2020 brightness in 1984
    brightness_power: float
    street_period: float   # metres
    street_angle: float    # radians


@dataclass(frozen=True)
class Road:
    """A road segment built in ``year``; ``width`` is the pavement's Gaussian sigma (metres)."""

    x0: float
    y0: float
    x1: float
    y1: float
    year: float
    width: float


@dataclass(frozen=True)
class Spot:
    """A small very bright light (night market, landmark): Gaussian of ``sigma`` metres, on from ``year``."""

    x: float
    y: float
    sigma: float
    radiance: float
    year: int


@dataclass(frozen=True)
class River:
    """A meandering river through ``(x0, y0)`` in direction ``angle``."""

    x0: float
    y0: float
    angle: float
    amp1: float
    wavelength1: float
    phase1: float
    amp2: float
    wavelength2: float
    phase2: float
    half_width: float


@dataclass(frozen=True)
class Terrain:
    """DEM parameters: flat valley floor around the cities, mountains away from them."""

    base: float          # valley floor elevation (m)
    relief: float        # mountain height above the floor (m)
    flat_margin: float   # flat belt beyond the 2020 city edge (m)
    rise: float          # distance over which the mountains rise (m)


@dataclass
class SceneFields:
    """Year-independent fields of the scene at a set of points (arrays of one shape)."""

    t_urban: np.ndarray     # year a point becomes urban
    density: np.ndarray     # impervious fraction once urban
    light: np.ndarray       # radiance per unit urban fraction at full brightness
    owner: np.ndarray       # uint8: index of the city (n_cities = roads) that urbanizes the point
    water: np.ndarray       # water fraction
    vegetation: np.ndarray  # vegetation share of the non-urban, non-water part
    roof: np.ndarray        # brightness factor of the urban spectrum
    background: np.ndarray  # background radiance
    spots: list[tuple[int, np.ndarray, np.ndarray]]  # (spot index, flat indices, Gaussian weights)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.t_urban.shape


@dataclass(frozen=True)
class SyntheticScene:
    """The hidden truth of the demo region.

    Build it with :meth:`from_config` (or :func:`build_scene`); evaluate it with
    :meth:`fields` + :meth:`radiance` / :meth:`urban_fraction` /
    :meth:`reflectance`, or on a grid with :meth:`radiance_on_grid`,
    :meth:`landsat_truth`, :meth:`elevation_on_grid`.
    """

    seed: int
    crs: str
    bounds: tuple[float, float, float, float]  # working grid (left, bottom, right, top)
    cities: tuple[City, ...]
    roads: tuple[Road, ...]
    spots: tuple[Spot, ...]
    river: River
    terrain: Terrain
    tex_edge: FourierTexture
    tex_density: FourierTexture
    tex_vegetation: FourierTexture
    tex_relief: FourierTexture

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "SyntheticScene":
        """The scene of a validated config (``synthetic.seed``, ``synthetic.n_cities``, working grid)."""
        grid = grid_from_config(cfg)
        params = cfg["synthetic"]
        return build_scene(int(params["seed"]), grid.crs, grid.bounds, int(params["n_cities"]))

    @property
    def centre(self) -> tuple[float, float]:
        l, b, r, t = self.bounds
        return (0.5 * (l + r), 0.5 * (b + t))

    # ---- per-year scalars ------------------------------------------------------------------
    def city_brightness(self, year: float) -> np.ndarray:
        """Brightness factor per owner (cities, then roads) in ``year`` (1 in 2020)."""
        s = min(max((year - FIRST_YEAR) / (LAST_YEAR - FIRST_YEAR), 0.0), 1.0)
        b = [c.brightness_1984 + (1 - c.brightness_1984) * s ** c.brightness_power for c in self.cities]
        b.append(0.35 + 0.65 * s)
        return np.asarray(b, np.float32)

    def vegetation_offset(self, year: int) -> float:
        """A wet/dry-year shift of the vegetation share."""
        return float(0.06 * _rng(self.seed, _S_YEAR, year).standard_normal())

    # ---- fields ----------------------------------------------------------------------------
    def _relative(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = self.centre
        return ((np.asarray(x, np.float64) - cx).astype(np.float32),
                (np.asarray(y, np.float64) - cy).astype(np.float32))

    def _city_distance(self, c: City, xm: np.ndarray, ym: np.ndarray) -> np.ndarray:
        """Elliptical distance (metres along the major axis) from a city's centre."""
        cx, cy = self.centre
        dx = xm - np.float32(c.x - cx)
        dy = ym - np.float32(c.y - cy)
        ca, sa = np.float32(math.cos(c.angle)), np.float32(math.sin(c.angle))
        u = dx * ca + dy * sa
        v = (dy * ca - dx * sa) / np.float32(c.aspect)
        return np.sqrt(u * u + v * v)

    def _river_distance(self, xm: np.ndarray, ym: np.ndarray) -> np.ndarray:
        r = self.river
        cx, cy = self.centre
        ca, sa = np.float32(math.cos(r.angle)), np.float32(math.sin(r.angle))
        dx = xm - np.float32(r.x0 - cx)
        dy = ym - np.float32(r.y0 - cy)
        s = dx * ca + dy * sa
        n = dy * ca - dx * sa
        k1, k2 = 2 * math.pi / r.wavelength1, 2 * math.pi / r.wavelength2
        a1 = s * np.float32(k1) + np.float32(r.phase1)
        a2 = s * np.float32(k2) + np.float32(r.phase2)
        f = np.float32(r.amp1) * np.sin(a1) + np.float32(r.amp2) * np.sin(a2)
        df = np.float32(r.amp1 * k1) * np.cos(a1) + np.float32(r.amp2 * k2) * np.cos(a2)
        return np.abs(n - f) / np.sqrt(1 + df * df)

    def _mountain(self, edge: np.ndarray) -> np.ndarray:
        t = self.terrain
        return _smoothstep((edge - np.float32(t.flat_margin)) / np.float32(t.rise))

    def fields(self, x: np.ndarray, y: np.ndarray) -> SceneFields:
        """Evaluate the static fields at points ``(x, y)`` (grid CRS, metres)."""
        xm, ym = self._relative(x, y)
        xk, yk = xm * np.float32(1e-3), ym * np.float32(1e-3)
        t_edge = self.tex_edge(xk, yk)
        t_dens = self.tex_density(xk, yk)
        t_veg = self.tex_vegetation(xk, yk)
        rough = np.exp(np.float32(0.22) * t_edge)

        n = len(self.cities)
        t_city = np.full(xm.shape, 3000.0, np.float32)
        owner = np.zeros(xm.shape, np.uint8)
        profile = np.zeros(xm.shape, np.float32)
        edge = np.full(xm.shape, np.inf, np.float32)
        for i, c in enumerate(self.cities):
            d = self._city_distance(c, xm, ym)
            np.minimum(edge, d - np.float32(c.r2020), out=edge)
            deff = np.maximum(d * rough, np.float32(1.0))
            tu = np.float32(FIRST_YEAR) + np.float32((LAST_YEAR - FIRST_YEAR) / math.log(c.r2020 / c.r1984)) \
                * np.log(deff / np.float32(c.r1984))
            better = tu < t_city
            t_city = np.where(better, tu, t_city)
            owner[better] = i
            prof = np.exp(-(d / np.float32(0.5 * c.r2020)) ** 2)
            profile = np.where(better, prof, profile)

        # street grid of the owning city
        period = np.asarray([c.street_period for c in self.cities], np.float32)[owner]
        cs = np.asarray([math.cos(c.street_angle) for c in self.cities], np.float32)[owner]
        sn = np.asarray([math.sin(c.street_angle) for c in self.cities], np.float32)[owner]
        su = (xm * cs + ym * sn) / period
        sv = (ym * cs - xm * sn) / period
        du = np.abs(su - np.floor(su) - np.float32(0.5))
        dv = np.abs(sv - np.floor(sv) - np.float32(0.5))
        dist_street = (np.float32(0.5) - np.maximum(du, dv)) * period
        streets = np.exp(np.float32(-0.5) * (dist_street / np.float32(18.0)) ** 2)

        dens_city = np.clip(0.55 + 0.15 * t_dens + 0.25 * profile + 0.35 * (streets - 0.1), 0.05, 0.98)
        dens_city = np.where(t_dens < -1.3, dens_city * np.float32(0.35), dens_city)
        core = np.asarray([c.core_radiance for c in self.cities], np.float32)[owner]
        light_city = core * (0.12 + 0.88 * profile) * np.clip(1 + 0.15 * t_dens, 0.5, 1.5) \
            * (0.7 + 1.5 * streets) / np.float32(0.77)

        # roads and ribbon development
        t_road = np.full(xm.shape, 3000.0, np.float32)
        pave = np.zeros(xm.shape, np.float32)
        cx, cy = self.centre
        for r in self.roads:
            ax, ay = np.float32(r.x0 - cx), np.float32(r.y0 - cy)
            bx, by = np.float32(r.x1 - cx), np.float32(r.y1 - cy)
            ex, ey = bx - ax, by - ay
            L2 = float(ex * ex + ey * ey)
            px, py = xm - ax, ym - ay
            t = np.clip((px * ex + py * ey) / np.float32(L2), 0, 1)
            qx, qy = px - t * ex, py - t * ey
            dist = np.sqrt(qx * qx + qy * qy)
            np.minimum(t_road, np.float32(r.year) + np.float32(15.0) * (dist / np.float32(250.0)) ** 2, out=t_road)
            np.maximum(pave, np.exp(np.float32(-0.5) * (dist / np.float32(r.width)) ** 2), out=pave)
        dens_road = np.clip(0.35 + 0.12 * t_dens + 0.6 * pave, 0.05, 0.95)
        light_road = np.float32(RADIANCE_ROAD) * pave + np.float32(RADIANCE_RIBBON) * np.clip(1 + 0.3 * t_dens, 0.2, 2)

        road_wins = t_road < t_city
        t_urban = np.clip(np.where(road_wins, t_road, t_city), 1800, 3000).astype(np.float32)
        owner = np.where(road_wins, np.uint8(n), owner).astype(np.uint8)
        density = np.where(road_wins, dens_road, dens_city).astype(np.float32)
        light = np.where(road_wins, light_road, light_city).astype(np.float32)

        rd = self._river_distance(xm, ym)
        water = np.clip((np.float32(self.river.half_width) - rd) / np.float32(60.0) + np.float32(0.5), 0, 1)
        vegetation = _sigmoid(1.3 * t_veg + 4.0 * (self._mountain(edge) - 0.3)).astype(np.float32)
        roof = np.clip(1 + 0.15 * t_dens, 0.6, 1.4).astype(np.float32)
        background = (np.float32(RADIANCE_BACKGROUND) * np.exp(np.float32(0.3) * np.tanh(t_veg))).astype(np.float32)

        spots = []
        xf, yf = xm.reshape(-1), ym.reshape(-1)
        for k, s in enumerate(self.spots):
            dx = xf - np.float32(s.x - cx)
            dy = yf - np.float32(s.y - cy)
            d2 = dx * dx + dy * dy
            idx = np.flatnonzero(d2 < np.float32((4 * s.sigma) ** 2))
            if idx.size:
                spots.append((k, idx, np.exp(-0.5 * d2[idx] / np.float32(s.sigma ** 2)).astype(np.float32)))
        return SceneFields(t_urban, density, light, owner, water.astype(np.float32), vegetation, roof,
                           background, spots)

    # ---- evaluation on fields ---------------------------------------------------------------
    def _built(self, f: SceneFields, year: float) -> np.ndarray:
        s = _sigmoid((np.float32(year) - f.t_urban) / np.float32(URBAN_TAU))
        return (f.density * s * (1 - f.water)).astype(np.float32)

    def urban_fraction(self, f: SceneFields, year: float) -> np.ndarray:
        """Impervious fraction in ``year`` (cities, roads, and the plazas of lit spots)."""
        u = self._built(f, year)
        flat = u.reshape(-1)
        for k, idx, w in f.spots:
            if year >= self.spots[k].year:
                flat[idx] = np.maximum(flat[idx], np.float32(0.95) * w)
        return np.minimum(u, 1 - f.water)

    def radiance(self, f: SceneFields, year: float) -> np.ndarray:
        """True night-time radiance (W m-2 sr-1 um-1) in ``year``."""
        u = self._built(f, year)
        out = f.background + f.light * u * self.city_brightness(year)[f.owner]
        flat = out.reshape(-1)
        for k, idx, w in f.spots:
            if year >= self.spots[k].year:
                flat[idx] += np.float32(self.spots[k].radiance) * w
        return out.astype(np.float32, copy=False)

    def reflectance(self, f: SceneFields, year: int) -> np.ndarray:
        """OLI-equivalent clear-sky surface reflectance, shape ``(7,) + f.shape`` (coastal..swir2).

        Linear mixing: ``g * ((1-v) soil + v vegetation) + u * roof * urban + water_fraction * water``
        with ``g = 1 - u - water_fraction``.
        """
        u = self.urban_fraction(f, year)
        v = np.clip(f.vegetation + np.float32(self.vegetation_offset(year)), 0, 1)
        g = np.maximum(1 - u - f.water, 0)
        terms = (g, g * v, u * f.roof, f.water)
        out = np.empty((7,) + f.shape, np.float32)
        tmp = np.empty(f.shape, np.float32)
        for b in range(7):
            np.multiply(terms[0], _ENDMEMBER_MATRIX[b, 0], out=out[b])
            for t, coef in zip(terms[1:], _ENDMEMBER_MATRIX[b, 1:]):
                np.multiply(t, coef, out=tmp)
                out[b] += tmp
        return out

    def elevation(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terrain height (metres) at points ``(x, y)``: flat around the cities, mountains away from them."""
        xm, ym = self._relative(x, y)
        xk, yk = xm * np.float32(1e-3), ym * np.float32(1e-3)
        edge = np.full(xm.shape, np.inf, np.float32)
        for c in self.cities:
            np.minimum(edge, self._city_distance(c, xm, ym) - np.float32(c.r2020), out=edge)
        m = self._mountain(edge)
        ridge = 1 - np.tanh(np.abs(self.tex_relief(xk, yk)))
        t = self.terrain
        plain = 18 * self.tex_vegetation(xk, yk) + 40 * np.clip(edge / np.float32(12000), 0, 1)
        river = 12 * np.exp(-(self._river_distance(xm, ym) / np.float32(1200)) ** 2)
        h = (np.float32(t.base) + plain + np.float32(t.relief) * m * (0.45 + 0.55 * ridge)
             + 30 * m * self.tex_density(xk, yk) - river)
        return h.astype(np.float32)

    # ---- evaluation on grids ----------------------------------------------------------------
    def fields_on_grid(self, grid: Grid, supersample: int = 1) -> SceneFields:
        """Static fields at the pixel centres of ``grid`` (any CRS), ``supersample`` points per pixel side."""
        x, y = pixel_centres(grid, self.crs, supersample)
        return self.fields(x, y)

    def radiance_on_grid(self, year: int, grid: Grid, supersample: int = 2,
                         fields: SceneFields | None = None) -> np.ndarray:
        """Pixel-mean true radiance on ``grid`` (mean of ``supersample**2`` points per pixel), float32."""
        f = fields if fields is not None else self.fields_on_grid(grid, supersample)
        return block_mean(self.radiance(f, year), supersample)

    def landsat_truth(self, year: int, grid: Grid, supersample: int = 1,
                      fields: SceneFields | None = None) -> np.ndarray:
        """OLI-equivalent 7-band clear-sky reflectance truth on ``grid``, shape (7, H, W), float32.

        ``supersample=1`` evaluates at pixel centres (what a synthetic scene on that grid
        holds before noise, clouds and TM/ETM+ band mapping); larger values give pixel means
        (what an ``average`` resampling of finer data approximates).
        """
        f = fields if fields is not None else self.fields_on_grid(grid, supersample)
        refl = self.reflectance(f, year)
        return np.stack([block_mean(b, supersample) for b in refl])

    def urban_fraction_on_grid(self, year: int, grid: Grid, supersample: int = 1) -> np.ndarray:
        """Pixel-mean impervious fraction on ``grid``."""
        return block_mean(self.urban_fraction(self.fields_on_grid(grid, supersample), year), supersample)

    def elevation_on_grid(self, grid: Grid) -> np.ndarray:
        """Terrain height at the pixel centres of ``grid``."""
        x, y = pixel_centres(grid, self.crs)
        return self.elevation(x, y)


_ENDMEMBER_MATRIX = np.stack([
    np.asarray(ENDMEMBERS["soil"]),
    np.asarray(ENDMEMBERS["vegetation"]) - np.asarray(ENDMEMBERS["soil"]),
    np.asarray(ENDMEMBERS["urban"]),
    np.asarray(ENDMEMBERS["water"]),
], axis=1).astype(np.float32)


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over non-overlapping ``k x k`` blocks of the last two axes (k=1: unchanged, float32)."""
    if k == 1:
        return a.astype(np.float32, copy=False)
    *lead, h, w = a.shape
    if h % k or w % k:
        raise ValueError(f"block_mean: shape {a.shape} is not a whole number of {k}x{k} blocks")
    return a.reshape(*lead, h // k, k, w // k, k).mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def build_scene(seed: int, crs: str, bounds: Sequence[float], n_cities: int) -> SyntheticScene:
    """Draw the scene parameters for a region (grid CRS ``bounds``) from ``seed``."""
    if n_cities < 1:
        raise ValueError(f"synthetic.n_cities must be >= 1, got {n_cities}")
    rng = _rng(seed, _S_SCENE)
    left, bottom, right, top = map(float, bounds)
    w, h = right - left, top - bottom
    size = math.sqrt(w * h)

    main_radius = max(0.16 * size, MIN_CITY_RADIUS)
    radii = [main_radius * (i + 1) ** -0.6 * rng.uniform(0.85, 1.15) for i in range(n_cities)]
    centres: list[tuple[float, float]] = []
    factor = 0.8
    for i, r in enumerate(radii):
        inner = 0.3 if i == 0 else 0.12
        for attempt in range(4000):
            if attempt and attempt % 500 == 0:
                factor *= 0.85
            x = rng.uniform(left + inner * w, right - inner * w)
            y = rng.uniform(bottom + inner * h, top - inner * h)
            if all(math.hypot(x - cx, y - cy) >= factor * (r + radii[j]) for j, (cx, cy) in enumerate(centres)):
                break
        centres.append((x, y))
    cities = []
    for i, ((x, y), r) in enumerate(zip(centres, radii)):
        cities.append(City(
            name=f"city{i + 1}", x=x, y=y, r1984=r / rng.uniform(2.0, 3.2), r2020=r,
            aspect=rng.uniform(0.6, 1.0), angle=rng.uniform(0, math.pi),
            core_radiance=RADIANCE_CITY_CORE * (1.0 if i == 0 else rng.uniform(0.5, 0.9)),
            brightness_1984=rng.uniform(0.3, 0.5), brightness_power=rng.uniform(0.8, 1.5),
            street_period=rng.uniform(400, 700), street_angle=rng.uniform(0, math.pi / 2)))

    # roads: minimum spanning tree of the cities, plus highways leaving the region
    edges = []
    inside, outside = [0], list(range(1, n_cities))
    while outside:
        a, b = min(((a, b) for a in inside for b in outside),
                   key=lambda ab: math.dist(centres[ab[0]], centres[ab[1]]))
        edges.append((centres[a], centres[b]))
        inside.append(b)
        outside.remove(b)
    for _ in range(2):
        ang = rng.uniform(0, 2 * math.pi)
        x0, y0 = centres[0]
        edges.append(((x0, y0), (x0 + 2 * size * math.cos(ang), y0 + 2 * size * math.sin(ang))))
    roads = tuple(Road(p[0], p[1], q[0], q[1], year=rng.uniform(1975, 2008), width=rng.uniform(25, 40))
                  for p, q in edges)

    area = np.asarray([c.r2020 ** 2 for c in cities])
    spots = []
    for _ in range(int(rng.integers(3, 6)) + n_cities // 2):
        c = cities[int(rng.choice(n_cities, p=area / area.sum()))]
        rr = c.r2020 * math.sqrt(rng.uniform(0, 0.25))
        ang = rng.uniform(0, 2 * math.pi)
        spots.append(Spot(x=c.x + rr * math.cos(ang), y=c.y + rr * math.sin(ang), sigma=rng.uniform(60, 120),
                          radiance=RADIANCE_CITY_CORE * rng.uniform(5, 10), year=int(rng.integers(1986, 2020))))

    main = cities[0]
    ang = rng.uniform(0, math.pi)
    off = rng.uniform(-0.5, 0.5) * main.r1984
    river = River(x0=main.x - off * math.sin(ang), y0=main.y + off * math.cos(ang), angle=ang,
                  amp1=rng.uniform(0.02, 0.05) * size, wavelength1=rng.uniform(0.4, 0.8) * size,
                  phase1=rng.uniform(0, 2 * math.pi), amp2=rng.uniform(0.005, 0.015) * size,
                  wavelength2=rng.uniform(0.1, 0.2) * size, phase2=rng.uniform(0, 2 * math.pi),
                  half_width=rng.uniform(70, 150))
    terrain = Terrain(base=rng.uniform(350, 550), relief=rng.uniform(900, 1600),
                      flat_margin=rng.uniform(1500, 3000), rise=rng.uniform(6000, 10000))
    return SyntheticScene(
        seed=int(seed), crs=crs, bounds=(left, bottom, right, top), cities=tuple(cities), roads=roads,
        spots=tuple(spots), river=river, terrain=terrain,
        tex_edge=FourierTexture.random(rng, 16, 300, 4000),
        tex_density=FourierTexture.random(rng, 20, 150, 2000, slope=0.7),
        tex_vegetation=FourierTexture.random(rng, 12, 800, 12000),
        tex_relief=FourierTexture.random(rng, 12, 3000, 40000))


# --------------------------------------------------------------------------------------------
# coordinates
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _same_crs(a: str, b: str) -> bool:
    from pyproj import CRS

    return a == b or CRS.from_user_input(a) == CRS.from_user_input(b)


def _lerp_rows(a: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of the rows of ``a`` (axis 0) at fractional row positions ``pos``."""
    if a.shape[0] == 1:
        return np.repeat(a, pos.size, axis=0)
    j = np.clip(np.floor(pos).astype(np.intp), 0, a.shape[0] - 2)
    w = (pos - j).astype(a.dtype)[:, None]
    return a[j] * (1 - w) + a[j + 1] * w


def pixel_centres(grid: Grid, crs: str, supersample: int = 1, step: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``crs`` of the pixel centres of ``grid`` (``supersample`` points per pixel side).

    When the CRSs differ the exact transform is computed on a lattice every
    ``step`` points and interpolated bilinearly in between (about 1 mm error for a UTM scene in the
    Albers grid, under 0.1 m for a 1-degree lon/lat tile, at a fraction of the cost).

    Returns
    -------
    x, y : ndarray
        float64 arrays of shape ``(grid.height * supersample, grid.width * supersample)``.
    """
    t = grid.transform
    h, w = grid.height * supersample, grid.width * supersample
    cols = t.c + (np.arange(w) + 0.5) * (t.a / supersample)
    rows = t.f + (np.arange(h) + 0.5) * (t.e / supersample)
    if _same_crs(grid.crs, crs):
        return np.broadcast_to(cols, (h, w)).copy(), np.broadcast_to(rows[:, None], (h, w)).copy()
    from pyproj import Transformer

    tr = Transformer.from_crs(grid.crs, crs, always_xy=True)
    nr, nc = np.unique(np.r_[np.arange(0, h, step), h - 1]), np.unique(np.r_[np.arange(0, w, step), w - 1])
    gx, gy = np.meshgrid(cols[nc], rows[nr])
    ex, ey = tr.transform(gx, gy)
    # positions of every row/column in node-index units (nodes are evenly spaced but the last)
    pr = np.interp(np.arange(h), nr, np.arange(nr.size))
    pc = np.interp(np.arange(w), nc, np.arange(nc.size))
    return tuple(np.ascontiguousarray(_lerp_rows(_lerp_rows(np.asarray(e, np.float64), pr).T, pc).T)
                 for e in (ex, ey))


def lonlat_bounds(grid: Grid, margin_deg: float = 0.0) -> tuple[float, float, float, float]:
    """(west, south, east, north) of ``grid`` in WGS84 degrees, widened by ``margin_deg``."""
    from rasterio.crs import CRS as RioCRS
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(RioCRS.from_user_input(grid.crs), RioCRS.from_epsg(4326), *grid.bounds,
                                  densify_pts=21)
    return (w - margin_deg, s - margin_deg, e + margin_deg, n + margin_deg)


def smooth_random_field(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float,
                        scales: Sequence[tuple[float, float]]) -> np.ndarray:
    """A smooth Gaussian random field of unit variance: sum over ``(correlation length m, weight)``.

    White noise on a lattice of half the correlation length is smoothed and
    interpolated bilinearly to the pixel centres, so the field looks the same
    (in metres) at any pixel size.
    """
    from scipy.ndimage import gaussian_filter

    h, w = shape
    out = np.zeros(shape, np.float32)
    total = 0.0
    for corr, weight in scales:
        spacing = corr / 2.0
        nr, nc = int(math.ceil(h * pixel_size / spacing)) + 2, int(math.ceil(w * pixel_size / spacing)) + 2
        coarse = gaussian_filter(rng.standard_normal((nr, nc)), 1.0, mode="wrap")
        coarse = (coarse / (coarse.std() + 1e-12)).astype(np.float32)
        pr = (np.arange(h) + 0.5) * pixel_size / spacing
        pc = (np.arange(w) + 0.5) * pixel_size / spacing
        out += np.float32(weight) * _lerp_rows(_lerp_rows(coarse, pr).T, pc).T
        total += weight ** 2
    out *= np.float32(1 / math.sqrt(total))
    return out
