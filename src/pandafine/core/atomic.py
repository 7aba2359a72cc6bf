"""Write-then-rename helpers: nothing appears under a final path until it is complete.

The temporary path of ``final`` is ``.{stem}.{8 random characters}.part{suffix}``
beside it (:func:`tempfile.mkstemp` names). A killed process cannot remove it;
the next write of the same ``final`` does (:func:`remove_stale_parts`), so a
rerun of any stage cleans up after the run that was killed. This assumes one
writer per output at a time (as Snakemake runs one job per output).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from pandafine.core.faults import RasterWriteError, disk_full_error, gdal_write_errors
from pandafine.core.tiff_check import tiff_damage

log = logging.getLogger(__name__)

#: The random part of a :func:`tempfile.mkstemp` name.
_RANDOM = "[a-z0-9_]{8}"


def stale_parts(final: str | os.PathLike, *, suffix: str | None = None, tags: tuple[str, ...] = ()) -> list[Path]:
    """Temporary files or directories of ``final`` left beside it: ``.{stem}.XXXXXXXX[.{tag}].part{suffix}``.

    Only names of exactly that form (``XXXXXXXX`` the 8 characters of a
    :func:`tempfile.mkstemp` name, ``tag`` one of ``tags``) match, so the
    temporaries of another output whose name starts like this one's
    (``x.fp16.tif`` beside ``x.tif``) never do, nor inference's
    ``.tiled.part.tif`` unless ``tags=("tiled",)``. A GDAL ``.aux.xml`` sidecar
    of such a file matches too.
    """
    final = Path(final)
    sfx = final.suffix if suffix is None else suffix
    tag = "|".join(re.escape(t) + r"\." for t in tags)
    pattern = re.compile(rf"\.{re.escape(final.stem)}\.{_RANDOM}\.(?:{tag})?part{re.escape(sfx)}(?:\.aux\.xml)?")
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))


def remove_stale_parts(final: str | os.PathLike, *, suffix: str | None = None,
                       tags: tuple[str, ...] = ()) -> list[Path]:
    """Remove the :func:`stale_parts` of ``final`` (files, symlinks or directories); return them.

    Call it before a new write of ``final`` starts, never while another writer
    of the same ``final`` may be running.
    """
    removed = []
    for p in stale_parts(final, suffix=suffix, tags=tags):
        with contextlib.suppress(FileNotFoundError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    if removed:
        log.warning("removed %d stale temporary file(s) of an interrupted run: %s", len(removed),
                    ", ".join(str(p) for p in removed))
    return removed


def check_complete(tmp: Path, final: Path) -> None:
    """Refuse a written TIFF whose directories point past its end (a write that failed unseen)."""
    if tmp.suffix.lower() in (".tif", ".tiff") and tmp.is_file():
        damage = tiff_damage(tmp)
        if damage:
            raise RasterWriteError(f"{final}: writing failed: the GeoTIFF written is incomplete ({damage})", final)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` on success.

    The temporary path lives in the same directory (so the rename is atomic on
    POSIX) and keeps the final suffix so that drivers chosen by extension still
    work. Temporaries of ``final`` left by a killed run are removed first. On
    any exception the temporary file or directory is removed and the final
    path is left untouched. GDAL write errors that rasterio only logs raise
    :class:`~pandafine.core.faults.RasterWriteError` (close the datasets
    written to the temporary path inside the block), a GeoTIFF whose structure
    does not fit its size is refused, and a write that fails on a full disk
    raises :class:`~pandafine.core.faults.DiskFullError` naming ``final`` and
    the free space.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sfx = final.suffix if suffix is None else suffix
    remove_stale_parts(final, suffix=sfx)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".part" + sfx, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers create it themselves (some refuse to overwrite)
    try:
        with gdal_write_errors(final):
            yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"writer produced nothing at temporary path {tmp} for {final}")
        check_complete(tmp, final)
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:
        full = disk_full_error(exc, final)  # before the partial file is removed: its space counts as used
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if full is not None:
            raise full from exc
        raise


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``final`` through a temporary file and a rename."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)
    return Path(final)
