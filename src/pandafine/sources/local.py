"""The ``local`` source: take a layer's raw files from a directory or glob on disk.

Files are copied (through a temporary name) into ``resources/raw/{layer}/`` so
that later stages read one layout whatever the source, and each copy's size and
sha256 are recorded in the layer's ``manifest.json``. Every destination name is
checked to lie inside the layer directory and every ``sources.{layer}.sha256``
entry is checked against its source file before anything is written.
"""

from __future__ import annotations

import glob
import logging
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from pandafine.core.atomic import atomic_path
from pandafine.core.checksums import sha256_file
from pandafine.sensors.landsat import SceneAssets, band_numbers, cap_per_path_row, sensor_of
from pandafine.sources.fetch import safe_join
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


log = logging.getLogger(__name__)


def check_checksums(pairs: Sequence[tuple[Path, str]], expected: Mapping[str, str], layer: str) -> None:
    """Raise ``ValueError`` naming the file if a source file's sha256 differs from ``sources.{layer}.sha256``."""
    for source_path, rel in pairs:
        want = expected.get(rel)
        if want is None:
            continue
        got = sha256_file(source_path)
        if got != want.lower():
            raise ValueError(f"{source_path}: sha256 {got} differs from sources.{layer}.sha256[{rel!r}] = {want}; "
                             "nothing was copied")
    unused = sorted(set(expected) - {rel for _, rel in pairs})
    if unused:
        log.warning("sources.%s.sha256 lists file(s) not taken from sources.%s.path: %s", layer, layer,
                    ", ".join(unused))


def download_local(cfg: Mapping, layer: str, out_dir: str | Path, years: Sequence[int]) -> Path:
    """Copy a layer's files from ``sources.{layer}.path`` into ``out_dir``; return the manifest path.

    Every destination is checked to lie inside ``out_dir`` and every ``sources.{layer}.sha256`` entry
    against its source before the first copy, so a bad name or checksum writes nothing.
    """
    src = cfg["sources"][layer]
    out_dir = Path(out_dir)
    pairs = _panda_files(src, years) if layer == "panda" else _tree_files(src, layer)
    dests = [safe_join(out_dir, rel) for _, rel in pairs]
    for (_, rel), dest in zip(pairs, dests):
        if dest.relative_to(out_dir).as_posix() != Path(rel).as_posix():
            raise ValueError(f"sources.{layer}: file name {rel!r} is not a plain relative path inside "
                             f"{out_dir} (it would be written as {dest})")
    check_checksums(pairs, src.get("sha256") or {}, layer)
    records = []
    for (source_path, _), dest in zip(pairs, dests):
        with atomic_path(dest) as tmp:
            shutil.copyfile(source_path, tmp)
        records.append((dest, str(source_path.resolve())))
    return write_manifest(out_dir, layer, "local", records)


def _find_scene_file(scene_dir: Path, name: str) -> Path:
    p = scene_dir / name
    if p.is_file():
        return p
    low = name.lower()
    for q in scene_dir.iterdir():
        if q.name.lower() == low:
            return q
    raise FileNotFoundError(f"{scene_dir}: missing {name} (a Collection-2 Level-2 scene directory holds "
                            f"{{scene_id}}_SR_B{{n}}.TIF for every band of its sensor and {{scene_id}}_QA_PIXEL.TIF)")


def landsat_scene(scene_dir: str | Path) -> SceneAssets:
    """The files of one Landsat scene directory ``{scene_id}/{scene_id}_SR_B{n}.TIF`` + ``_QA_PIXEL.TIF``."""
    scene_dir = Path(scene_dir)
    scene_id = scene_dir.name
    sensor = sensor_of(scene_id)
    bands = tuple((name, str(_find_scene_file(scene_dir, f"{scene_id}_SR_B{n}.TIF")))
                  for name, n in band_numbers(sensor).items())
    return SceneAssets(scene_id, sensor, bands, str(_find_scene_file(scene_dir, f"{scene_id}_QA_PIXEL.TIF")))


def landsat_scenes(root: str | Path, year: int, max_scenes: int | None = None) -> list[SceneAssets]:
    """The Landsat scenes of ``year`` under ``root`` (``{root}/{year}/{scene_id}/``), read in place.

    A year without a directory has no scene. ``max_scenes`` caps the scenes per
    WRS-2 path/row (:func:`pandafine.sensors.landsat.cap_per_path_row`; local
    scenes carry no cloud cover, so the cap keeps the first by id).
    """
    year_dir = Path(root) / str(int(year))
    if not Path(root).is_dir():
        raise FileNotFoundError(f"sources.landsat.path={root}: no such directory")
    if not year_dir.is_dir():
        return []
    dirs = sorted(p for p in year_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return cap_per_path_row([landsat_scene(d) for d in dirs], max_scenes)
