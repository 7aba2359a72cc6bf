"""Atomic writes: stale temporaries of killed runs, a full disk, incomplete GeoTIFFs (pandafine.core.atomic)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pandafine.core import faults
from pandafine.core.atomic import atomic_path, remove_stale_parts, stale_parts, write_text_atomic
from pandafine.core.faults import DiskFullError, RasterWriteError

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pandafine.core.atomic import atomic_path

    with atomic_path(sys.argv[1]) as tmp:
        if sys.argv[2] == "dir":
            tmp.mkdir()
            (tmp / "chunk").write_bytes(b"x" * 1000)
        else:
            tmp.write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write: no cleanup runs
""")


def killed_write(final: Path, kind: str = "file") -> None:
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(final), kind], capture_output=True, timeout=60)
    assert run.returncode == -9, run.stderr


@pytest.mark.parametrize("name,kind", [("out.tif", "file"), ("train.zarr", "dir")])
def test_killed_writers_leftover_is_removed_by_the_next_write(tmp_path, name, kind):
    final = tmp_path / name
    stem, sfx = final.stem, final.suffix
    killed_write(final, kind)
    leftovers = stale_parts(final)
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{stem}.") and not final.exists()
    others = [tmp_path / f".{stem}.fp16.abcd1234.part{sfx}",  # a temporary of another output, x.fp16.tif
              tmp_path / f".{stem}.abcd1234.tiled.part{sfx}",  # inference's own temporary (removed by infer)
              tmp_path / f".other.abcd1234.part{sfx}",
              tmp_path / f"{stem}.abcd1234.part{sfx}",  # not hidden: not ours
              tmp_path / "notes.txt"]
    for p in others:
        p.write_text("keep me")
    with atomic_path(final) as tmp:
        if kind == "dir":
            tmp.mkdir()
        else:
            tmp.write_text("new")
    assert final.exists()
    assert not leftovers[0].exists()
    assert all(p.read_text() == "keep me" for p in others)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name] + [p.name for p in others])


def test_remove_stale_parts_knows_tags_and_gdal_sidecars(tmp_path):
    final = tmp_path / "PANDA-FINE_2015.tif"
    names = [".PANDA-FINE_2015.k2j_9xq0.part.tif", ".PANDA-FINE_2015.k2j_9xq0.part.tif.aux.xml",
             ".PANDA-FINE_2015.a1b2c3d4.tiled.part.tif"]
    for n in names:
        (tmp_path / n).write_text("")
    assert [p.name for p in remove_stale_parts(final)] == names[:2]
    assert [p.name for p in remove_stale_parts(final, tags=("tiled",))] == names[2:]
    assert list(tmp_path.iterdir()) == []


def test_write_text_atomic_cleans_up_too(tmp_path):
    stale = tmp_path / ".metrics.zz9_8yx7.part.json"
    stale.write_text("{")
    write_text_atomic(tmp_path / "metrics.json", "{}")
    assert not stale.exists() and (tmp_path / "metrics.json").read_text() == "{}"


# ----------------------------------------------------------------------------- a full disk


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_enospc_is_said_disk_full_with_the_path_and_free_space(tmp_path):
    final = tmp_path / "cube" / "2015.json"
    with pytest.raises(DiskFullError) as exc:
        with atomic_path(final), open("/dev/full", "wb") as f:
            f.write(b"x" * 100_000)
            f.flush()
    msg = str(exc.value)
    assert msg.startswith("disk full: writing ") and str(final) in msg and " free on the file system of " in msg
    assert exc.value.errno == errno.ENOSPC and isinstance(exc.value.__cause__, OSError)
    assert list(final.parent.iterdir()) == []


@pytest.mark.parametrize("error", [
    RuntimeError("basic_ios::clear: iostream error"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
    RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"),
    RasterWriteError("x.tif: writing failed: GDAL: TIFFAppendToStrip:Write error at scanline 512"),
])
def test_write_failure_without_a_reason_on_a_full_file_system_is_disk_full(tmp_path, monkeypatch, error):
    final = tmp_path / "model" / "resume.pt"
    monkeypatch.setattr(faults, "free_bytes", lambda path: 4096)
    with pytest.raises(DiskFullError, match=r"disk full: writing .*resume\.pt failed .*4\.0 KiB free"):
        with atomic_path(final):
            raise error
    # with room left the same error is not put down to the disk
    monkeypatch.setattr(faults, "free_bytes", lambda path: 50 * 2**30)
    with pytest.raises(type(error)):
        with atomic_path(final):
            raise error
    monkeypatch.setattr(faults, "free_bytes", lambda path: 0)
    with pytest.raises(ValueError):  # not a write failure
        with atomic_path(final):
            raise ValueError("bad value")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_checkpoint_on_a_full_disk_says_disk_full(tmp_path, monkeypatch):
    """torch.save's own error on a full disk (here: into /dev/full), as training's checkpoint sees it."""
    torch = pytest.importorskip("torch")
    from pandafine.models.checkpoint import save_checkpoint

    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, "/dev/full"))
    monkeypatch.setattr(faults, "free_bytes", lambda path: 0)
    final = tmp_path / "model" / "resume.pt"
    with pytest.raises(DiskFullError) as exc:
        save_checkpoint(final, {"weights": torch.zeros(10_000)})
    assert str(final) in str(exc.value) and "0 B free" in str(exc.value)
    assert list(final.parent.iterdir()) == []


def test_incomplete_geotiff_is_not_renamed_into_place(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    import numpy as np
    from affine import Affine

    final = tmp_path / "layer.tif"
    with pytest.raises(RasterWriteError, match="layer.tif: writing failed: the GeoTIFF written is incomplete"):
        with atomic_path(final) as tmp:
            with rasterio.open(tmp, "w", driver="GTiff", width=300, height=300, count=1, dtype="float32",
                               crs="EPSG:32650", transform=Affine(100, 0, 5e5, 0, -100, 4e6), compress="deflate") as dst:
                dst.write(np.random.default_rng(0).random((1, 300, 300), dtype=np.float32))
            data = tmp.read_bytes()
            tmp.write_bytes(data[:-500])  # as if the last blocks never reached the disk
    assert list(tmp_path.iterdir()) == []
