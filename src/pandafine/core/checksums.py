"""File checksums shared by manifests, products, exports and provenance: one file, or a directory tree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 over ``(relative path, file sha256)`` pairs, independent of their order.

    Parameters
    ----------
    entries : iterable of (str, str)
        POSIX relative paths and the hex sha256 of each file.

    Returns
    -------
    str
        Hex digest of the sorted lines ``path\\0sha256\\n``.
    """
    h = hashlib.sha256()
    for rel, digest in sorted(entries):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def tree_sha256(path: str | os.PathLike) -> str:
    """Digest of a file or of every file under a directory (e.g. a Zarr store).

    A plain file gets its own sha256; a directory gets :func:`tree_digest` of all
    files below it (paths relative to it). Raises ``FileNotFoundError`` naming the path.
    """
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"input to checksum not found: {path}")
    return tree_digest((f.relative_to(path).as_posix(), sha256_file(f))
                       for f in path.rglob("*") if f.is_file())
