"""Remembered digests: a large output is hashed once, where it is written, and re-hashed only when it changes."""

from __future__ import annotations

import os

import pandafine.core.checksums as checksums
from pandafine.core.checksums import digest_sidecar, remembered_sha256, tree_sha256


def counting(monkeypatch):
    calls = []
    real = checksums.tree_sha256

    def wrapped(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(checksums, "tree_sha256", wrapped)
    return calls


def test_a_tree_is_hashed_once_until_a_file_changes(tmp_path, monkeypatch):
    store = tmp_path / "2018.zarr"
    (store / "inputs").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    (store / "inputs" / "c0").write_bytes(b"\x00" * 1000)
    calls = counting(monkeypatch)
    first = remembered_sha256(store)
    assert first == tree_sha256(store) and len(calls) == 1
    assert digest_sidecar(store) == tmp_path / ".2018.zarr.sha256.json" and digest_sidecar(store).is_file()
    assert remembered_sha256(store) == first and len(calls) == 1  # reused: nothing read again
    # a chunk rewritten (other bytes, other time stamp): hashed again, and the new digest kept
    chunk = store / "inputs" / "c0"
    chunk.write_bytes(b"\x01" * 1000)
    os.utime(chunk, ns=(chunk.stat().st_atime_ns, chunk.stat().st_mtime_ns + 10**9))
    second = remembered_sha256(store)
    assert second != first and second == tree_sha256(store) and len(calls) == 2
    assert remembered_sha256(store) == second and len(calls) == 2
    # a file added: hashed again
    (store / "inputs" / "c1").write_bytes(b"\x02")
    assert remembered_sha256(store) == tree_sha256(store) and len(calls) == 3


def test_a_damaged_sidecar_is_ignored_and_a_single_file_works(tmp_path, monkeypatch):
    cog = tmp_path / "PANDA-FINE_2018.tif"
    cog.write_bytes(b"II*\x00" + b"\x07" * 100)
    digest_sidecar(cog).write_text("{not json")
    calls = counting(monkeypatch)
    assert remembered_sha256(cog) == tree_sha256(cog) and len(calls) == 1
    assert remembered_sha256(cog) == tree_sha256(cog) and len(calls) == 1


def test_an_unwritable_directory_only_costs_the_reuse(tmp_path, monkeypatch):
    cog = tmp_path / "p.tif"
    cog.write_bytes(b"abc")

    def refuse(*_a, **_k):
        raise PermissionError("read-only")

    monkeypatch.setattr("pandafine.core.atomic.write_text_atomic", refuse)
    assert remembered_sha256(cog) == tree_sha256(cog)
    assert not digest_sidecar(cog).exists()
