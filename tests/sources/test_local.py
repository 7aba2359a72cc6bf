"""The ``local`` source: names stay inside the layer directory, ``sha256`` is honoured, nothing half-written."""

from __future__ import annotations

import hashlib
import json

import pytest

from pandafine.config import ConfigError, validate_config
from pandafine.sources.local import download_local


def _panda_dir(tmp_path, years=(2018, 2019)):
    src = tmp_path / "src"
    src.mkdir()
    for y in years:
        (src / f"PANDA_China_{y}.tif").write_bytes(f"panda {y}".encode())
    return src


def _cfg(src, **panda):
    return {"sources": {"panda": {"kind": "local", "path": str(src), **panda}}}


def test_copies_and_records_every_file(tmp_path):
    src = _panda_dir(tmp_path)
    manifest = download_local(_cfg(src), "panda", tmp_path / "raw", [2018, 2019])
    files = json.loads(manifest.read_text())["files"]
    assert [f["path"] for f in files] == ["PANDA_China_2018.tif", "PANDA_China_2019.tif"]
    assert files[0]["sha256"] == hashlib.sha256(b"panda 2018").hexdigest()


def test_sha256_mismatch_is_an_error_naming_the_file_and_nothing_is_written(tmp_path):
    src = _panda_dir(tmp_path)
    good = hashlib.sha256(b"panda 2018").hexdigest()
    cfg = _cfg(src, sha256={"PANDA_China_2018.tif": good, "PANDA_China_2019.tif": "0" * 64})
    with pytest.raises(ValueError, match=r"PANDA_China_2019\.tif: sha256 .* differs"):
        download_local(cfg, "panda", tmp_path / "raw", [2018, 2019])
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").rglob("*"))


def test_matching_sha256_passes(tmp_path):
    src = _panda_dir(tmp_path)
    cfg = _cfg(src, sha256={f"PANDA_China_{y}.tif": hashlib.sha256(f"panda {y}".encode()).hexdigest()
                            for y in (2018, 2019)})
    assert download_local(cfg, "panda", tmp_path / "raw", [2018, 2019]).is_file()


def test_pattern_climbing_out_writes_nothing_outside(tmp_path):
    """A pattern with '..' must not copy anything outside the layer directory (it is also a config error)."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "PANDA_2018.tif").write_bytes(b"outside")
    src = tmp_path / "a" / "b"
    src.mkdir(parents=True)
    out = tmp_path / "work" / "resources" / "raw" / "panda"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="outside|plain relative path"):
        download_local(_cfg(src, pattern="../../x/PANDA_{year}.tif"), "panda", out, [2018])
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("pattern", ["../../x/PANDA_{year}.tif", "sub/PANDA_{year}.tif", ".PANDA_{year}.tif",
                                     "PANDA.tif", "PANDA_{year}_{name}.tif"])
def test_config_rejects_a_pattern_that_is_not_a_file_name(tiny_config, pattern):
    tiny_config["sources"]["panda"] = {"kind": "local", "path": "/data/PANDA", "pattern": pattern}
    with pytest.raises(ConfigError, match="sources.panda.pattern"):
        validate_config(tiny_config)


def test_config_accepts_the_default_pattern(tiny_config):
    tiny_config["sources"]["panda"] = {"kind": "local", "path": "/data/PANDA", "pattern": "PANDA_China_{year}.tif"}
    validate_config(tiny_config)
