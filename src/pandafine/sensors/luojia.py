"""Luojia-01 (LJ1-01) conventions: DN -> radiance, footprint of a frame.

Frames are INT32 DN rasters in EPSG:4326 (~130 m) with a ``{frame_id}_meta.xml``
giving the footprint polygon (four corners) and the imaging time. Radiance is
``L = DN^1.5 * 1e-10`` W·m⁻²·sr⁻¹·µm⁻¹; pixels outside the footprint are not
data.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: L = DN ** RADIANCE_EXPONENT * RADIANCE_SCALE
RADIANCE_EXPONENT = 1.5
RADIANCE_SCALE = 1e-10

_CORNERS = ("TopLeft", "TopRight", "BottomRight", "BottomLeft")


@dataclass(frozen=True)
class FrameMeta:
    """What ``{frame_id}_meta.xml`` says about a frame.

    Attributes
    ----------
    footprint : tuple of (lon, lat)
        Corners TopLeft, TopRight, BottomRight, BottomLeft (degrees, WGS84).
    imaging_time : str or None
        ``ImagingTime`` as written in the file.
    """

    footprint: tuple[tuple[float, float], ...]
    imaging_time: str | None = None

    def polygon(self) -> dict:
        """The footprint as a closed GeoJSON polygon (lon, lat)."""
        ring = [list(p) for p in self.footprint]
        return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def dn_to_radiance(dn: np.ndarray) -> np.ndarray:
    """Radiance ``DN^1.5 * 1e-10`` as float32; negative DN (not physical) -> NaN."""
    d = np.asarray(dn, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = np.where(d >= 0, np.power(np.maximum(d, 0), RADIANCE_EXPONENT) * RADIANCE_SCALE, np.nan)
    return out.astype(np.float32)


def radiance_to_dn(radiance: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dn_to_radiance` (float; round for integer DN)."""
    return np.power(np.maximum(np.asarray(radiance, dtype=np.float64), 0) / RADIANCE_SCALE,
                    1.0 / RADIANCE_EXPONENT)


def _find_float(root: ET.Element, tag: str, path: Path) -> float:
    # Tags may sit at any depth and carry a namespace; match on the local name.
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == tag:
            try:
                return float((el.text or "").strip())
            except ValueError:
                raise ValueError(f"{path}: element <{tag}> holds {el.text!r}, expected a number") from None
    raise ValueError(f"{path}: element <{tag}> not found; a Luojia-01 meta.xml needs "
                     + ", ".join(f"{c}Latitude/{c}Longitude" for c in _CORNERS))


def parse_meta_xml(path: str | Path) -> FrameMeta:
    """Read the footprint corners and imaging time of a Luojia-01 ``_meta.xml``."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not valid XML ({exc})") from exc
    corners = []
    for c in _CORNERS:
        lat = _find_float(root, f"{c}Latitude", path)
        lon = _find_float(root, f"{c}Longitude", path)
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"{path}: corner {c} ({lon}, {lat}) is not a valid lon/lat")
        corners.append((lon, lat))
    t = None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "ImagingTime":
            t = (el.text or "").strip() or None
            break
    return FrameMeta(tuple(corners), t)


def footprint_mask(meta: FrameMeta, shape: tuple[int, int], transform, crs=None) -> np.ndarray:
    """Boolean mask, True for pixels whose centre lies inside the footprint polygon.

    Parameters
    ----------
    meta : FrameMeta
    shape : (rows, cols)
    transform : affine.Affine
        Pixel-corner transform of the frame.
    crs : optional
        The frame's CRS; the polygon (lon/lat) is transformed into it unless it
        is geographic WGS84 (EPSG:4326) or ``None``.
    """
    from rasterio.features import geometry_mask

    geom = meta.polygon()
    if crs is not None:
        from rasterio.crs import CRS

        crs = CRS.from_user_input(crs)
        if crs.to_epsg() != 4326:
            from rasterio.warp import transform_geom

            geom = transform_geom("EPSG:4326", crs, geom)
    return geometry_mask([geom], out_shape=shape, transform=transform, invert=True, all_touched=False)


def frame_radiance(dn: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Radiance of a frame, NaN outside the footprint mask ``inside``."""
    rad = dn_to_radiance(dn)
    rad[~inside] = np.nan
    return rad
