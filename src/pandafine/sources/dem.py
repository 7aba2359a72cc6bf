"""DEM tile names: Copernicus GLO-90 tiles covering a lon/lat box, and URL templates (SRTM, mirrors).

Tiles are 1 degree x 1 degree and named after their lower-left corner:
``Copernicus_DSM_COG_30_N34_00_E108_00_DEM`` covers 34..35 N, 108..109 E;
``..._S01_00_W001_00_DEM`` covers 1..0 S, 1..0 W. The public bucket keeps each
tile as ``{name}/{name}.tif``. Tiles that would be all ocean do not exist there
(HTTP 404), which callers treat as "no data" rather than as an error.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Sequence

#: The public Copernicus GLO-90 bucket (AWS open data).
COPERNICUS_GLO90_BASE = "https://copernicus-dem-90m.s3.amazonaws.com"
#: Fields a DEM URL template may use.
TEMPLATE_FIELDS = frozenset({"lat", "lon", "NS", "EW", "ns", "ew", "lat_signed", "lon_signed", "name"})
#: Default margin (degrees) added around the region box when choosing tiles.
DEFAULT_MARGIN_DEG = 0.05


@dataclass(frozen=True, order=True)
class DemTile:
    """A 1-degree tile by its lower-left corner (integer degrees)."""

    lat: int
    lon: int

    @property
    def ns(self) -> str:
        return "N" if self.lat >= 0 else "S"

    @property
    def ew(self) -> str:
        return "E" if self.lon >= 0 else "W"

    @property
    def copernicus_name(self) -> str:
        """``Copernicus_DSM_COG_30_{N|S}{lat:02d}_00_{E|W}{lon:03d}_00_DEM``."""
        return f"Copernicus_DSM_COG_30_{self.ns}{abs(self.lat):02d}_00_{self.ew}{abs(self.lon):03d}_00_DEM"

    def fields(self) -> dict:
        """Values for a URL template: ``lat``/``lon`` (absolute), ``NS``/``EW`` (and lower case), signed, name."""
        return {"lat": abs(self.lat), "lon": abs(self.lon), "NS": self.ns, "EW": self.ew,
                "ns": self.ns.lower(), "ew": self.ew.lower(), "lat_signed": self.lat, "lon_signed": self.lon,
                "name": self.copernicus_name}


def tiles_for_bbox(bbox: Sequence[float], margin: float = DEFAULT_MARGIN_DEG) -> list[DemTile]:
    """The 1-degree tiles intersecting ``bbox`` (west, south, east, north, degrees) grown by ``margin``.

    A box edge lying exactly on a whole degree does not pull in the tile beyond
    it. Longitudes wrap across the antimeridian; latitudes are clipped to
    -90..90. Tiles are sorted by (lat, lon).
    """
    w, s, e, n = (float(v) for v in bbox)
    if not (w < e and s < n):
        raise ValueError(f"bbox {list(bbox)}: expected [west, south, east, north] with west < east, south < north")
    if margin < 0:
        raise ValueError(f"margin {margin}: expected >= 0 degrees")
    w, e = w - margin, e + margin
    s, n = max(-90.0, s - margin), min(90.0, n + margin)
    lats = range(math.floor(s), math.ceil(n))
    if e - w >= 360:
        lons = range(-180, 180)
    else:
        lons = sorted({((lon + 180) % 360) - 180 for lon in range(math.floor(w), math.ceil(e))})
    return sorted({DemTile(lat, lon) for lat in lats for lon in lons})


def copernicus_url(tile: DemTile, base: str = COPERNICUS_GLO90_BASE) -> str:
    """URL of a GLO-90 tile in the public bucket: ``{base}/{name}/{name}.tif``."""
    name = tile.copernicus_name
    return f"{base.rstrip('/')}/{name}/{name}.tif"


def check_template(template: str, allowed: frozenset[str] = TEMPLATE_FIELDS, *, key: str = "url") -> None:
    """Raise ``ValueError`` naming ``key`` if ``template`` uses a field not in ``allowed`` or is malformed."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{key}={template!r}: not a valid template ({exc})") from None
    bad = sorted(f for f in used if f not in allowed)
    if bad:
        raise ValueError(f"{key}={template!r}: unknown field(s) {bad}; allowed: {sorted(allowed)}")


def expand_template(template: str, tile: DemTile, *, key: str = "url") -> str:
    """``template`` with the tile's fields, e.g. ``.../{NS}{lat:02d}{EW}{lon:03d}.tif`` -> ``.../N34E108.tif``."""
    check_template(template, key=key)
    try:
        return template.format(**tile.fields())
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{key}={template!r}: cannot expand for tile {tile} ({exc})") from None
