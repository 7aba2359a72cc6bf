"""The ``local`` source: take a layer's raw files from a directory or glob on disk.

Files are copied (through a temporary name) into ``resources/raw/{layer}/`` so
that later stages read one layout whatever the source, and each copy's size and
sha256 are recorded in the layer's ``manifest.json``.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from pandafine.core.atomic import atomic_path
from pandafine.sources.manifest import write_manifest


def _panda_files(src: Mapping, years: Sequence[int]) -> list[tuple[Path, str]]:
    base = Path(src["path"])
    pattern = src.get("pattern", "PANDA_China_{year}.tif")
    pairs = []
    missing = []
    for y in years:
        name = pattern.format(year=y)
        p = base / name
        if not p.is_file():
            missing.append(str(p))
        pairs.append((p, pattern.format(year=y)))
    if missing:
        raise FileNotFoundError(f"sources.panda.path={base}: missing PANDA file(s) for the configured years: "
                                + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    return pairs


def _tree_files(src: Mapping, layer: str) -> list[tuple[Path, str]]:
    path = src["path"]
    if any(ch in path for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(path, recursive=True)) if Path(p).is_file()]
        pairs = [(p, p.name) for p in files]
    else:
        base = Path(path)
        if not base.is_dir():
            raise FileNotFoundError(f"sources.{layer}.path={base}: no such directory")
        pairs = [(p, str(p.relative_to(base))) for p in sorted(base.rglob("*")) if p.is_file()]
    if not pairs:
        raise FileNotFoundError(f"sources.{layer}.path={path}: matched no file")
    return pairs


def download_local(cfg: Mapping, layer: str, out_dir: str | Path, years: Sequence[int]) -> Path:
    """Copy a layer's files from ``sources.{layer}.path`` into ``out_dir``; return the manifest path."""
    src = cfg["sources"][layer]
    out_dir = Path(out_dir)
    pairs = _panda_files(src, years) if layer == "panda" else _tree_files(src, layer)
    records = []
    for source_path, rel in pairs:
        dest = out_dir / rel
        with atomic_path(dest) as tmp:
            shutil.copyfile(source_path, tmp)
        records.append((dest, str(source_path.resolve())))
    return write_manifest(out_dir, layer, "local", records)
