"""Faults of files and disks, said in one line: unreadable rasters, failed GDAL writes, a full disk.

Standard library only (the CLI imports it before numpy and GDAL load):

* :class:`RasterFileError`: an input raster that is truncated or corrupt (the message names the file).
* :func:`gdal_write_errors`: GDAL errors that rasterio only logs (a failed flush of cached blocks when a
  dataset is closed, e.g. "Maximum TIFF file size exceeded" or a write error on a full disk) recorded
  while a file is written, and raised as :class:`RasterWriteError` when the writing is done.
* :func:`disk_full_error`: whether a failed write was a full disk (``ENOSPC``, GDAL's or PyTorch's
  stream-writer errors with no space left), as :class:`DiskFullError` naming the path and the free space.
* :func:`raster_failure_message`: the one line the CLI prints for a rasterio error that escaped a stage.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Iterable, Iterator

from pandafine.core.tiff_check import tiff_damage

#: A write that failed for an unknown reason is put down to a full disk when its file system has less free.
LOW_SPACE_BYTES = 16 * 2**20
#: rasterio's loggers of GDAL errors (CE_Failure is logged at INFO as "GDAL signalled an error: ...").
GDAL_LOGGERS = ("rasterio._env", "rasterio._err")
#: GDAL error messages of a failed write (libtiff's and GDAL's own), as opposed to a failed read.
WRITE_FAILURE = re.compile(r"writ|maximum tiff file size|no space left|disk quota|cannot initialize empty blocks"
                           r"|flush", re.IGNORECASE)
#: Messages of a write stopped by a full disk: the OS's, and PyTorch's stream writer (``torch.save``).
NO_SPACE = re.compile(r"no space left on device|disk quota exceeded", re.IGNORECASE)
TORCH_WRITE_FAILURE = re.compile(r"iostream error|PytorchStreamWriter failed|file write failed|unexpected pos \d+",
                                 re.IGNORECASE)
#: GDAL errors shown in the log per written file (the others are counted): a failed flush fails every block.
SHOWN_GDAL_ERRORS = 3


class RasterFileError(ValueError):
    """A raster file that cannot be read: truncated, corrupt or not a raster (the message names it)."""


class _WriteFault(OSError):
    """An :class:`OSError` whose message is its whole text, with the file being written as ``filename``."""

    def __init__(self, message: str, filename: str | os.PathLike | None = None):
        super().__init__(message)
        self.filename = None if filename is None else os.fspath(filename)

    def __str__(self) -> str:
        return str(self.args[0])


class RasterWriteError(_WriteFault):
    """GDAL reported a failed write, or the file written is incomplete (the message names it)."""


class DiskFullError(_WriteFault):
    """A write failed because its file system is full (the message names the path and the free space)."""

    def __init__(self, message: str, filename: str | os.PathLike | None = None):
        super().__init__(message, filename)
        self.errno = errno.ENOSPC


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes (for an unprivileged user) on the file system of ``path`` or its closest existing parent."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes and contexts, outermost first (each once)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


# ----------------------------------------------------------------------------- GDAL write errors


class GdalErrors:
    """GDAL errors of failed writes seen while a file was written: how many, and the first few messages."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self.messages: list[str] = []

    def add(self, message: str) -> bool:
        """Record one error; True while it is among the first :data:`SHOWN_GDAL_ERRORS` (to be logged)."""
        self.count += 1
        if len(self.messages) < SHOWN_GDAL_ERRORS:
            self.messages.append(message)
            return True
        return False

    def error(self) -> RasterWriteError | None:
        if not self.count:
            return None
        more = f" (and {self.count - 1} more GDAL error(s))" if self.count > 1 else ""
        return RasterWriteError(f"{self.path}: writing failed: GDAL: {self.messages[0]}{more}", self.path)


def _gdal_error_message(record: logging.LogRecord) -> str | None:
    """The GDAL message of a rasterio log record of a GDAL error (CE_Failure or CE_Fatal), else None."""
    if str(record.msg).startswith("GDAL signalled an error"):
        args = record.args
        return str(args[-1]) if isinstance(args, tuple) and args else record.getMessage()
    if record.levelno >= logging.CRITICAL:
        return record.getMessage()
    return None


class _GdalErrorTap(logging.Filter):
    """The filter on rasterio's GDAL-error loggers while files are written (one for all writers)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.recorders: list[GdalErrors] = []
        self.levels: dict[str, tuple[int, int]] = {}  # logger -> (its own level, its effective level) before

    def filter(self, record: logging.LogRecord) -> bool:
        shown = record.levelno >= self.levels.get(record.name, (0, 0))[1]
        message = _gdal_error_message(record)
        if message is None or not WRITE_FAILURE.search(message):
            return shown
        with self.lock:
            logged = [r.add(message) for r in self.recorders]
        return shown and all(logged)

    def attach(self, recorder: GdalErrors) -> None:
        with self.lock:
            if not self.recorders:
                for name in GDAL_LOGGERS:
                    logger = logging.getLogger(name)
                    self.levels[name] = (logger.level, logger.getEffectiveLevel())
                    if not logger.isEnabledFor(logging.INFO):  # CE_Failure comes at INFO
                        logger.setLevel(logging.INFO)
                    logger.addFilter(self)
            self.recorders.append(recorder)

    def detach(self, recorder: GdalErrors) -> None:
        with self.lock:
            self.recorders.remove(recorder)
            if not self.recorders:
                for name in GDAL_LOGGERS:
                    logger = logging.getLogger(name)
                    logger.removeFilter(self)
                    if logger.level != self.levels[name][0]:
                        logger.setLevel(self.levels[name][0])


_TAP = _GdalErrorTap()


@contextlib.contextmanager
def gdal_write_errors(path: str | os.PathLike) -> Iterator[GdalErrors]:
    """Raise :class:`RasterWriteError` after the block if GDAL reported a failed write during it.

    rasterio raises on the GDAL errors of the call that fails, but a GeoTIFF
    written window by window keeps blocks in GDAL's cache and writes them when
    they are evicted or when the dataset is closed; a failure then (a classic
    TIFF past 4 GB, a full disk) is only logged, once per block. Within this
    block those errors are recorded (the first :data:`SHOWN_GDAL_ERRORS` still
    logged, the others counted) and raised when the block ends, so close the
    datasets written to ``path`` inside it. Read errors are not recorded
    (rasterio raises them). If the block raises, its exception goes on.
    """
    recorder = GdalErrors(path)
    _TAP.attach(recorder)
    try:
        yield recorder
    finally:
        _TAP.detach(recorder)
    error = recorder.error()
    if error is not None:
        raise error


# ----------------------------------------------------------------------------- full disk


def _names_no_space(exc: BaseException) -> bool:
    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) or NO_SPACE.search(str(e))
               for e in exception_chain(exc))


def _failed_write(exc: BaseException) -> bool:
    """A write that failed with no reason given (PyTorch's stream writer, GDAL, the OS)."""
    for e in exception_chain(exc):
        if isinstance(e, (RasterWriteError, DiskFullError)) or TORCH_WRITE_FAILURE.search(str(e)):
            return True
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and "write" in str(e).lower():
            return True
    return False


def disk_full_error(exc: BaseException, path: str | os.PathLike | None) -> DiskFullError | None:
    """``exc``, raised while writing ``path``, as a :class:`DiskFullError` if the disk was full, else None.

    Full when an error of the chain is ``ENOSPC``/``EDQUOT`` or says so ("No
    space left on device"), or when a write failed with no reason given
    (PyTorch's "basic_ios::clear: iostream error", "PytorchStreamWriter failed
    writing file", "unexpected pos"; a GDAL write error) and the file system of
    ``path`` has less than :data:`LOW_SPACE_BYTES` free. Call it before the
    partial file is removed. ``path`` None: a write somewhere (the free space
    is that of the working directory).
    """
    if isinstance(exc, DiskFullError):
        return None
    where = Path.cwd() if path is None else Path(path).parent
    free = free_bytes(where)
    full = _names_no_space(exc) or (_failed_write(exc) and free is not None and free < LOW_SPACE_BYTES)
    if not full:
        return None
    left = "unknown" if free is None else format_bytes(free)
    reasons = [str(e) for e in exception_chain(exc) if str(e)]
    reason = next((r for r in reasons if "See previous exception" not in r), reasons[0] if reasons else "")
    reason = (reason or type(exc).__name__).splitlines()[0]
    what = "a write" if path is None else f"writing {path}"
    if path is not None:
        reason = reason.removeprefix(f"{path}: ")
    return DiskFullError(f"disk full: {what} failed ({reason}); {left} free on the file system of {where}; "
                         "free some space and rerun", path)


# ----------------------------------------------------------------------------- errors escaping a stage


_GDAL_FILE = re.compile(r"^(?P<name>[^\n:,']+?)(?:, band \d+)?: ")
_QUOTED = re.compile(r"'([^'\n]+)'")


def is_rasterio_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of rasterio's exceptions (its own or a GDAL ``CPLE_*`` error)."""
    return type(exc).__module__.split(".")[0] == "rasterio"


def _gdal_messages(exc: BaseException) -> list[str]:
    return [str(e) for e in exception_chain(exc) if is_rasterio_error(e) and str(e)]


def _find_file(name: str, search: Iterable[str | os.PathLike]) -> Path | None:
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    base = candidate.name
    for p in map(Path, search):
        if p.is_file() and p.name == base:
            return p
        if p.is_dir():
            found = next((q for q in p.rglob(base) if q.is_file()), None)
            if found is not None:
                return found
    return None


def raster_failure_message(exc: BaseException, search: Iterable[str | os.PathLike] = ()) -> str | None:
    """One line for a rasterio/GDAL error, naming the file and whether it is truncated or corrupt.

    GDAL's messages name the dataset by its file name only (``x.tif, band 1:
    IReadBlock failed ...``); the file is looked up as given, then among the
    paths ``search`` (the stage's arguments: files, or directories searched
    recursively). None if ``exc`` is not a rasterio error.
    """
    messages = _gdal_messages(exc)
    if not messages:
        return None
    detail = "; ".join(m for m in messages if "See previous exception" not in m) or messages[0]
    search = list(search)
    for m in messages:
        names = [m_.group("name") for m_ in [_GDAL_FILE.match(m)] if m_] + _QUOTED.findall(m)
        for name in names:
            path = _find_file(name.strip(), search)
            if path is None:
                continue
            damage = tiff_damage(path)
            if damage:
                return f"{path}: {damage}"
            return f"{path}: corrupt or unreadable raster (GDAL: {detail})"
    return f"GDAL error: {detail}"


__all__ = ["DiskFullError", "GdalErrors", "RasterFileError", "RasterWriteError", "disk_full_error",
           "exception_chain", "format_bytes", "free_bytes", "gdal_write_errors", "is_rasterio_error",
           "raster_failure_message"]
