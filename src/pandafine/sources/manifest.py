"""A download layer's ``manifest.json``: every file with its size and sha256.

Format (docs/contracts.md)::

    {"layer": str, "source": kind,
     "files": [{"path": <relative to the layer dir>, "size": int, "sha256": hex, "origin": url-or-path}]}

Files are listed sorted by path so that the manifest of identical inputs is
byte-identical; the manifest is written through a temporary file and a rename.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from pandafine.core.atomic import write_text_atomic
from pandafine.core.checksums import sha256_file  # noqa: F401  (re-exported for sources.http and tests)

MANIFEST_NAME = "manifest.json"


def file_record(path: str | Path, root: str | Path, origin: str) -> dict[str, Any]:
    """The manifest entry of ``path``: its path relative to ``root``, size, sha256 and origin."""
    path, root = Path(path), Path(root)
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        raise ValueError(f"{path}: file is not inside the layer directory {root}") from None
    return {"path": rel.as_posix(), "size": path.stat().st_size, "sha256": sha256_file(path), "origin": origin}


def write_manifest(layer_dir: str | Path, layer: str, source: str,
                   files: Iterable[str | Path | tuple[str | Path, str]],
                   origin: str | Callable[[Path], str] | None = None) -> Path:
    """Write ``layer_dir/manifest.json`` listing ``files`` (which must lie inside ``layer_dir``).

    Parameters
    ----------
    layer_dir : path
        The layer directory; paths in the manifest are relative to it.
    layer, source : str
        Layer name (``panda``, ``landsat``, ...) and source kind (``synthetic``, ``local``, ...).
    files : iterable of paths or of ``(path, origin)`` pairs
        The files to list (absolute, or relative to the current directory), each
        optionally paired with where it came from (URL or path).
    origin : str or callable, optional
        Origin of the files given without one; a callable gets the file path.
        Default: the file's own absolute path.

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    layer_dir = Path(layer_dir)
    records = []
    for item in files:
        if isinstance(item, tuple):
            f, org = Path(item[0]), str(item[1])
        else:
            f = Path(item)
            org = origin(f) if callable(origin) else (origin if origin is not None else str(f.resolve()))
        if not f.is_file():
            raise FileNotFoundError(f"{f}: listed for the {layer} manifest but no such file")
        records.append(file_record(f, layer_dir, org))
    records.sort(key=lambda r: r["path"])
    paths = [r["path"] for r in records]
    if len(set(paths)) != len(paths):
        raise ValueError(f"{layer_dir / MANIFEST_NAME}: duplicate file paths in manifest: {sorted(paths)}")
    doc = {"layer": layer, "source": source, "files": records}
    return write_text_atomic(layer_dir / MANIFEST_NAME, json.dumps(doc, indent=2) + "\n")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest and check its structure; raise ``ValueError`` naming the problem."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable manifest ({exc})") from exc
    for key in ("layer", "source", "files"):
        if key not in doc:
            raise ValueError(f"{path}: manifest lacks key '{key}' (expected layer, source, files)")
    for i, rec in enumerate(doc["files"]):
        missing = {"path", "size", "sha256", "origin"} - set(rec)
        if missing:
            raise ValueError(f"{path}: files[{i}] lacks {sorted(missing)}")
    return doc


def verify_manifest(path: str | Path) -> list[str]:
    """Check every listed file against its size and sha256; return a list of problems (empty if none)."""
    path = Path(path)
    doc = read_manifest(path)
    problems = []
    for rec in doc["files"]:
        f = path.parent / rec["path"]
        if not f.is_file():
            problems.append(f"{f}: missing")
        elif f.stat().st_size != rec["size"]:
            problems.append(f"{f}: size {f.stat().st_size}, manifest says {rec['size']}")
        elif sha256_file(f) != rec["sha256"]:
            problems.append(f"{f}: sha256 differs from the manifest")
    return problems
