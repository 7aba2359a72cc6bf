"""The yearly product file: tiled GeoTIFF -> Cloud-Optimized GeoTIFF, with its metadata tags.

The inference stage writes a tiled GeoTIFF window by window (never the whole
raster in memory); :func:`write_cog` copies it into a COG with rio-cogeo
(compression with a floating-point predictor, internal overviews by averaging,
NaN nodata) through a temporary file and a rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from pandafine import __version__
from pandafine.config import config_hash
from pandafine.config_keys import product_config
from pandafine.core.atomic import atomic_path, remove_stale_parts
from pandafine.core.checksums import remembered_sha256, sha256_file
from pandafine.core.scaling import RADIANCE_UNITS

#: Compression names accepted by :func:`write_cog` (config ``product.compress``).
COMPRESSIONS = {"zstd": "ZSTD", "deflate": "DEFLATE"}

#: Band names of a yearly product: radiance, and for an ensemble of a generative model the per-pixel spread.
PRODUCT_BANDS = ("radiance", "radiance_spread")

#: Rasters up to this many bytes are assembled in memory by rio-cogeo; larger ones on disk.
IN_MEMORY_BYTES = 256 * 2**20

#: Tag of the private directory a COG is written in (``.{stem}.XXXXXXXX.cog.part.tif``): rio-cogeo keeps
#: its intermediate file beside the file it writes, so it goes in there, never beside the product.
COG_STAGING_TAG = "cog"
#: Tag of the temporary tiled GeoTIFF a product is written into before the COG (``.{stem}.XXXXXXXX.tiled.part.tif``).
TILED_TAG = "tiled"


def product_tags(cfg: Mapping[str, Any], year: int, model_path: str | os.PathLike,
                 input_path: str | os.PathLike | None = None) -> dict[str, str]:
    """Dataset tags of a PANDA-FINE product.

    Parameters
    ----------
    cfg : mapping
        The validated workflow config; ``config_sha256`` is :func:`pandafine.config.config_hash` of its
        :func:`~pandafine.config_keys.product_config` (the sections of studies and downloads left out).
    year : int
        Product year.
    model_path : path
        The ONNX model used (hashed with sha256).
    input_path : path, optional
        The inference cube (Zarr store) the product is computed from, recorded as
        ``input_sha256`` (:func:`pandafine.core.checksums.tree_sha256`: sha256 over every file of the store;
        :func:`~pandafine.core.checksums.remembered_sha256` reuses the digest the cube stage wrote beside it).

    Returns
    -------
    dict of str to str
        ``product``, ``quantity``/``scale`` (``radiance``), ``units``, ``year``,
        ``model``, ``model_sha256``, ``config_sha256``, ``software``, ``pandafine_version``,
        and ``input_sha256`` when ``input_path`` is given.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {model_path}")
    tags = {
        "product": "PANDA-FINE",
        "quantity": "radiance",
        "scale": "radiance",
        "units": RADIANCE_UNITS,
        "year": str(int(year)),
        "model": model_path.name,
        "model_sha256": sha256_file(model_path),
        "config_sha256": config_hash(product_config(cfg)),
        "software": f"pandafine {__version__}",
        "pandafine_version": __version__,
    }
    if input_path is not None:
        tags["input_sha256"] = remembered_sha256(input_path)
    return tags


def cog_profile(compress: str = "zstd", blocksize: int = 512, dtype: str = "float32") -> dict[str, Any]:
    """The rio-cogeo destination profile: tiled, compressed with predictor, BIGTIFF if needed."""
    import numpy as np

    key = str(compress).lower()
    if key not in COMPRESSIONS:
        raise ValueError(f"compression {compress!r} is not supported; expected one of {sorted(COMPRESSIONS)}")
    if blocksize < 16 or blocksize % 16:
        raise ValueError(f"COG blocksize must be a positive multiple of 16, got {blocksize}")
    kind = np.dtype(dtype).kind
    profile = {
        "driver": "GTiff", "interleave": "pixel", "tiled": True,
        "blockxsize": int(blocksize), "blockysize": int(blocksize),
        "compress": COMPRESSIONS[key], "BIGTIFF": "IF_SAFER",
        "predictor": 3 if kind == "f" else 2,
    }
    if key == "zstd":
        profile["zstd_level"] = 9
    return profile


def tiled_blocksize(height: int, width: int) -> int | None:
    """Internal block size of a temporary tiled GeoTIFF: 512 if the raster allows, else 256, else untiled."""
    small = min(height, width)
    if small >= 512:
        return 512
    if small >= 256:
        return 256
    return None


def tiled_profile(height: int, width: int, count: int, crs, transform) -> dict[str, Any]:
    """Profile of the temporary float32 GeoTIFF a product is written into before its COG.

    Band-interleaved, tiled by :func:`tiled_blocksize` (row-band writes touch one
    row of blocks), fast zstd with the floating-point predictor, NaN nodata,
    BigTIFF when the size needs it.
    """
    profile = dict(driver="GTiff", width=int(width), height=int(height), count=int(count), dtype="float32",
                   crs=crs, transform=transform, nodata=float("nan"), compress="zstd", zstd_level=1,
                   predictor=3, BIGTIFF="IF_SAFER", interleave="band")
    side = tiled_blocksize(height, width)
    if side:
        profile.update(tiled=True, blockxsize=side, blockysize=side)
    else:
        profile.update(tiled=False)
    return profile


@contextlib.contextmanager
def tiled_temporary(out_path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path for the tiled GeoTIFF of ``out_path``, removed on leaving.

    What an interrupted run of the same product left behind (its tiled
    temporary, its COG staging directory, :func:`pandafine.core.atomic.remove_stale_parts`)
    is removed first; a killed process cannot clean up after itself. The file is
    ``.{stem}.XXXXXXXX.tiled.part.tif`` beside ``out_path`` (same file system, so it can be renamed
    onto it); it exists, empty, when the block is entered.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(out_path, tags=(TILED_TAG, COG_STAGING_TAG))
    fd, name = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=f".{TILED_TAG}.part.tif", dir=out_path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def overview_levels(width: int, height: int, min_size: int = 256) -> int:
    """Number of 2x overview levels so that the coarsest one fits in ``min_size`` pixels.

    A 352 px demo product gets one level (176 px), a 40 000 px China-wide product eight.
    """
    if width < 1 or height < 1 or min_size < 1:
        raise ValueError(f"sizes must be positive, got width={width} height={height} min_size={min_size}")
    levels, size = 0, max(width, height)
    while size > min_size:
        size = -(-size // 2)
        levels += 1
    return levels


def write_cog(src_tiled_tif: str | os.PathLike, out_path: str | os.PathLike, *, compress: str = "zstd",
              blocksize: int = 512, tags: Mapping[str, Any] | None = None,
              overview_resampling: str = "average", overview_min_size: int = 256) -> Path:
    """Copy a (tiled) GeoTIFF into a Cloud-Optimized GeoTIFF, atomically.

    Parameters
    ----------
    src_tiled_tif : path
        Source GeoTIFF (float rasters use NaN as nodata).
    out_path : path
        Final COG path; nothing appears there until the file is complete.
    compress : {'zstd', 'deflate'}
        Compression (with predictor 3 for floats, 2 for integers).
    blocksize : int
        Internal tile size (and overview tile size).
    tags : mapping, optional
        Dataset tags to add (e.g. :func:`product_tags`); values are written as strings.
        Band descriptions and band tags of the source are carried over.
    overview_resampling : str
        Resampling of the internal overviews.
    overview_min_size : int
        Overviews are added (each half the size of the previous) until the
        coarsest fits in this many pixels (see :func:`overview_levels`).

    Returns
    -------
    pathlib.Path
        ``out_path``.
    """
    import numpy as np
    import rasterio
    from rio_cogeo.cogeo import cog_translate

    src_tiled_tif = Path(src_tiled_tif)
    if not src_tiled_tif.is_file():
        raise FileNotFoundError(f"source GeoTIFF for the COG not found: {src_tiled_tif}")
    str_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    with rasterio.open(src_tiled_tif) as src:
        if src.crs is None:
            raise ValueError(f"{src_tiled_tif}: raster has no CRS; a product COG must be georeferenced")
        dtype = src.dtypes[0]
        nodata = src.nodata
        if nodata is None and np.dtype(dtype).kind == "f":
            nodata = float("nan")
        in_memory = src.width * src.height * src.count * np.dtype(dtype).itemsize <= IN_MEMORY_BYTES
        profile = cog_profile(compress, blocksize, dtype)
        config = {"GDAL_TIFF_OVR_BLOCKSIZE": str(blocksize), "GDAL_TIFF_INTERNAL_MASK": True}
        # rio-cogeo keeps its intermediate file beside the file it writes: write into a private
        # directory named as a temporary of ``out_path``, which the next run removes if this one is killed
        remove_stale_parts(out_path, tags=(COG_STAGING_TAG,))
        with atomic_path(out_path) as tmp, warnings.catch_warnings():
            stage = Path(tempfile.mkdtemp(prefix=f".{Path(out_path).stem}.",
                                          suffix=f".{COG_STAGING_TAG}.part{tmp.suffix}", dir=tmp.parent))
            try:
                # rio-cogeo multiplies Affine objects with `*` (affine >= 2.5 prefers `@`): not ours to fix
                warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="rio_cogeo")
                cog_translate(src, stage / "cog.tif", profile, nodata=nodata, overview_resampling=overview_resampling,
                              overview_level=overview_levels(src.width, src.height, overview_min_size),
                              in_memory=in_memory, config=config, additional_cog_metadata=str_tags,
                              forward_band_tags=True, quiet=True)
                os.replace(stage / "cog.tif", tmp)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
    return Path(out_path)


def validate_cog(path: str | os.PathLike, *, strict: bool = False) -> tuple[bool, list[str], list[str]]:
    """Check that ``path`` is a valid Cloud-Optimized GeoTIFF (rio-cogeo's validator).

    Returns
    -------
    (bool, list of str, list of str)
        Whether it is valid, the errors and the warnings.
    """
    from rio_cogeo.cogeo import cog_validate

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COG to validate not found: {path}")
    ok, errors, warns = cog_validate(str(path), strict=strict, quiet=True)
    return bool(ok), list(errors), list(warns)
