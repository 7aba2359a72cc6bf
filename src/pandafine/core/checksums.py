"""File checksums shared by manifests, products, exports and provenance: one file, or a directory tree.

:func:`remembered_sha256` hashes a large output (a year's inference cube) once, where it is
written, and keeps the digest in a sidecar beside it with the size and modification time of every
file it covered; later readers (each spatial block's inference job, the provenance record) reuse
it while none of those changed, instead of reading the cube again.
``pandafine verify`` does not use it: checking for drift reads the bytes.
"""

from __future__ import annotations

import hashlib
import json
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


def digest_sidecar(path: str | os.PathLike) -> Path:
    """The sidecar of :func:`remembered_sha256`: ``.{name}.sha256.json`` beside ``path``."""
    path = Path(path)
    return path.parent / f".{path.name}.sha256.json"


def file_listing_digest(path: str | os.PathLike) -> str:
    """sha256 of the relative path, size and modification time (ns) of every file of ``path``."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        files = [("", st.st_size, st.st_mtime_ns)]
    elif path.is_dir():
        files = []
        for f in path.rglob("*"):
            if f.is_file():
                st = f.stat()
                files.append((f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    else:
        raise FileNotFoundError(f"input to checksum not found: {path}")
    h = hashlib.sha256()
    for rel, size, mtime in sorted(files):
        h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def remembered_sha256(path: str | os.PathLike) -> str:
    """:func:`tree_sha256` of ``path``, computed once and kept in its sidecar (:func:`digest_sidecar`).

    The sidecar is reused while :func:`file_listing_digest` (every file's size and
    modification time) is unchanged; otherwise the bytes are hashed again and the
    sidecar rewritten (atomically; a directory that cannot be written only costs the
    reuse). A file changed in place with the same size and time stamp is not noticed:
    ``pandafine verify`` reads the bytes.
    """
    from pandafine.core.atomic import write_text_atomic  # lazy: atomic imports raster modules

    path = Path(path)
    listing = file_listing_digest(path)
    side = digest_sidecar(path)
    try:
        rec = json.loads(side.read_text())
        if rec.get("listing") == listing and isinstance(rec.get("sha256"), str):
            return rec["sha256"]
    except (OSError, ValueError):
        pass
    digest = tree_sha256(path)
    if file_listing_digest(path) == listing:  # nothing changed while it was read
        try:
            write_text_atomic(side, json.dumps({"sha256": digest, "listing": listing}) + "\n")
        except OSError:
            pass
    return digest
