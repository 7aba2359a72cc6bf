"""The robust HTTP fetcher and the ``http`` source, against a fault-injecting server on 127.0.0.1."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import time
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import yaml

from pandafine.config import schema
from pandafine.sources import dem
from pandafine.sources import fetch as http
from pandafine.sources.fetch import DownloadError, DownloadItem, HttpPolicy, NotFoundError, fetch, fetch_many
from pandafine.sources.http import check_http_source, dem_items, download_http, panda_items
from pandafine.sources.manifest import read_manifest, verify_manifest
from repo_paths import REPO

FAST = HttpPolicy(retries=2, backoff=0.001, timeout=2.0, concurrency=2, allow_http=True, progress=False)
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes (so a mis-assembled resume changes the digest)."""
    out, block, i = bytearray(), b"", 0
    while len(out) < n:
        block = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        out += block
        i += 1
    return bytes(out[:n])


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# the fault-injecting server
# --------------------------------------------------------------------------------------------

class FaultHandler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.faults[path]`` is a queue of one-shot faults, ``server.modes[path]``
    a set of permanent behaviours. Supports ``Range: bytes=N-``.

    One-shot faults: ``500``, ``503``, ``cut`` (announce the full length, send half, hang up).
    Modes: ``norange`` (ignore Range), ``stall`` (wait ``server.stall`` s before answering),
    ``trickle`` (send the body in 8 pieces with short pauses), ``delay`` (0.15 s before the body).
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        with srv.lock:
            srv.requests.append((path, self.headers.get("Range")))
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
            fault = srv.faults[path].popleft() if srv.faults.get(path) else None
        self._counted = True
        try:
            self._serve(path, fault, srv.modes.get(path, set()))
        finally:
            self._done()

    def _done(self):
        """This request no longer counts as active: called before the last bytes go out, since the client
        may start its next request as soon as it has them (before this thread runs another line)."""
        if self._counted:
            self._counted = False
            with self.server.lock:
                self.server.active -= 1

    def _send(self, code: int, body: bytes, headers: dict | None = None, length: int | None = None):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _serve(self, path, fault, modes):
        srv = self.server
        self.close_connection = True
        if "stall" in modes:
            time.sleep(srv.stall)
        if fault in ("500", "503"):
            body = b"server error"
            self._send(int(fault), body)
            self.wfile.write(body)
            return
        if path not in srv.files:
            body = b"not found"
            self._send(404, body)
            self.wfile.write(body)
            return
        data = srv.files[path]
        start, code, headers = 0, 200, {"Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        if rng and "norange" not in modes:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            code = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        self._send(code, body, headers)
        if "delay" in modes:
            time.sleep(0.15)
        if fault == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            return  # the server closes the connection: the client sees a short body
        if "trickle" in modes:
            step = max(1, len(body) // 8)
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
                time.sleep(0.02)
            return
        self._done()
        self.wfile.write(body)


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, deque] = {}
        self.modes: dict[str, set] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.active = self.max_active = 0
        self.stall = 1.0

    def handle_error(self, request, client_address):  # a client hanging up on a stalled answer is expected
        pass

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, path: str, data: bytes, faults=(), modes=()) -> str:
        self.files[path] = data
        self.faults[path] = deque(faults)
        self.modes[path] = set(modes)
        return self.base + path

    def hits(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


@pytest.fixture()
def server():
    srv = FaultServer()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


# --------------------------------------------------------------------------------------------
# single-file faults
# --------------------------------------------------------------------------------------------

def test_retries_5xx_then_succeeds_with_exponential_backoff(server, tmp_path):
    data = payload(50_000)
    url = server.add("/f.tif", data, faults=["500", "503"])
    delays = []
    policy = HttpPolicy(retries=3, backoff=0.5, allow_http=True, progress=False)
    res = fetch(DownloadItem(url, "f.tif"), tmp_path, policy, sleep=delays.append)
    assert (tmp_path / "f.tif").read_bytes() == data
    assert res.sha256 == sha(data) and res.size == len(data) and res.path == tmp_path / "f.tif"
    assert len(server.hits("/f.tif")) == 3
    assert delays == [0.5, 1.0]  # backoff * 2**(k-1)
    assert all_files(tmp_path) == ["f.tif"]


def test_persistent_5xx_gives_up_naming_url_and_status(server, tmp_path):
    url = server.add("/f.tif", b"x", faults=["500"] * 10)
    with pytest.raises(DownloadError) as ei:
        fetch(DownloadItem(url, "f.tif"), tmp_path, FAST)
    assert url in str(ei.value) and "HTTP 500" in str(ei.value) and "3 attempt" in str(ei.value)
    assert len(server.hits("/f.tif")) == FAST.retries + 1
    assert all_files(tmp_path) == []


def test_cut_mid_body_resumes_with_range_and_right_sha256(server, tmp_path):
    data = payload(200_000, seed=1)
    url = server.add("/cut.tif", data, faults=["cut"])
    res = fetch(DownloadItem(url, "cut.tif", sha256=sha(data)), tmp_path, FAST)
    assert res.sha256 == sha(data)
    assert (tmp_path / "cut.tif").read_bytes() == data
    assert server.hits("/cut.tif") == [None, f"bytes={len(data) // 2}-"]
    assert all_files(tmp_path) == ["cut.tif"]


def test_cut_on_server_without_range_restarts_from_zero(server, tmp_path):
    data = payload(100_000, seed=2)
    url = server.add("/nr.tif", data, faults=["cut"], modes=["norange"])
    res = fetch(DownloadItem(url, "nr.tif"), tmp_path, FAST)
    assert res.sha256 == sha(data) and (tmp_path / "nr.tif").read_bytes() == data
    assert len(server.hits("/nr.tif")) == 2


def test_cut_on_every_attempt_fails_and_leaves_nothing(server, tmp_path):
    url = server.add("/c.tif", payload(10_000), faults=["cut"] * 10, modes=["norange"])
    with pytest.raises(DownloadError, match="mid-body|truncated"):
        fetch(DownloadItem(url, "c.tif"), tmp_path, FAST)
    assert all_files(tmp_path) == []


def test_wrong_checksum_is_an_error_and_leaves_nothing(server, tmp_path):
    data = payload(5_000)
    wrong = sha(b"something else")
    url = server.add("/w.tif", data)
    with pytest.raises(DownloadError) as ei:
        fetch(DownloadItem(url, "w.tif", sha256=wrong), tmp_path, FAST)
    msg = str(ei.value)
    assert url in msg and sha(data) in msg and wrong in msg
    assert len(server.hits("/w.tif")) == FAST.retries + 1  # re-fetched from scratch each time
    assert all_files(tmp_path) == []


def test_present_file_with_expected_checksum_is_not_fetched_again(server, tmp_path):
    data = payload(3_000)
    url = server.add("/p.tif", data)
    (tmp_path / "p.tif").write_bytes(data)
    res = fetch(DownloadItem(url, "p.tif", sha256=sha(data)), tmp_path, FAST)
    assert res.sha256 == sha(data) and server.hits("/p.tif") == []
    (tmp_path / "p.tif").write_bytes(b"stale")  # wrong content: fetched again
    fetch(DownloadItem(url, "p.tif", sha256=sha(data)), tmp_path, FAST)
    assert (tmp_path / "p.tif").read_bytes() == data and len(server.hits("/p.tif")) == 1


def test_404_optional_is_skipped_required_is_an_error_without_retry(server, tmp_path):
    url = server.base + "/missing.tif"
    assert fetch(DownloadItem(url, "m.tif", optional=True), tmp_path, FAST) is None
    with pytest.raises(NotFoundError) as ei:
        fetch(DownloadItem(url, "m.tif"), tmp_path, FAST)
    assert url in str(ei.value) and "404" in str(ei.value)
    assert len(server.hits("/missing.tif")) == 2  # one request each, no retry
    assert all_files(tmp_path) == []


def test_stalled_server_times_out_naming_the_cause(server, tmp_path):
    server.stall = 1.0
    url = server.add("/s.tif", b"late", modes=["stall"])
    policy = HttpPolicy(retries=1, backoff=0.001, timeout=0.2, allow_http=True, progress=False)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="timed out") as ei:
        fetch(DownloadItem(url, "s.tif"), tmp_path, policy)
    assert time.monotonic() - t0 < 0.9  # two 0.2 s timeouts, not the server's 2 x 1 s
    assert url in str(ei.value)
    assert all_files(tmp_path) == []


def test_slow_trickling_body_within_timeout_completes(server, tmp_path):
    data = payload(20_000, seed=3)
    url = server.add("/t.tif", data, modes=["trickle"])
    policy = HttpPolicy(retries=0, timeout=1.0, allow_http=True, progress=False, chunk=1024)
    assert fetch(DownloadItem(url, "t.tif"), tmp_path, policy).sha256 == sha(data)


def test_unreachable_host_fails_fast_naming_url_and_cause(tmp_path):
    url = UNREACHABLE + "/PANDA_China_2000.tif"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as ei:
        fetch(DownloadItem(url, "PANDA_China_2000.tif"), tmp_path, FAST)
    assert time.monotonic() - t0 < 2.0
    assert url in str(ei.value) and "refused" in str(ei.value).lower()
    assert all_files(tmp_path) == []


# --------------------------------------------------------------------------------------------
# policy, URLs and names
# --------------------------------------------------------------------------------------------

def test_https_only_unless_allowed(server, tmp_path):
    url = server.add("/h.tif", b"abc")
    strict = HttpPolicy(progress=False)
    with pytest.raises(ValueError, match="allow_http"):
        fetch(DownloadItem(url, "h.tif"), tmp_path, strict)
    with pytest.raises(ValueError, match="scheme"):
        fetch_many([DownloadItem(url, "h.tif")], tmp_path, strict)
    for bad in ("file:///etc/passwd", "ftp://example.org/x.tif", "//example.org/x.tif"):
        with pytest.raises(ValueError):
            http.check_url(bad, FAST)  # even with allow_http
    http.check_url("https://example.org/x.tif", strict)
    assert server.requests == [] and all_files(tmp_path) == []
    assert fetch(DownloadItem(url, "h.tif"), tmp_path, FAST).sha256 == sha(b"abc")


def test_redirect_to_a_forbidden_scheme_is_refused(server, tmp_path):
    class Redirect(FaultHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "https://example.invalid/x.tif" if "up" in self.path else "ftp://x/y")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server.RequestHandlerClass = Redirect
    with pytest.raises(ValueError, match="scheme"):
        fetch(DownloadItem(server.base + "/down", "x.tif"), tmp_path, FAST)
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "etc/passwd"),
    ("a/../../b.tif", "a/b.tif"),
    ("/abs/x.tif", "abs/x.tif"),
    ("..\\..\\win.tif", "win.tif"),
    ("./.hidden", "_hidden"),
    ("sp ace;rm -rf.tif", "sp_ace_rm_-rf.tif"),
])
def test_safe_relpath_never_climbs(name, expected):
    assert http.safe_relpath(name) == expected


def test_unusable_names_are_refused(tmp_path):
    for bad in ("..", "../..", "", "/"):
        with pytest.raises(ValueError, match="no usable path"):
            http.safe_relpath(bad)
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(ValueError, match="outside"):
        http.safe_join(root, "link/x.tif")


def test_hostile_names_stay_inside_the_layer_dir(server, tmp_path):
    root = tmp_path / "resources" / "raw" / "panda"
    urls = [server.add(f"/n{i}", payload(100, seed=i)) for i in range(3)]
    names = ["../../etc/passwd", "a/../../b.tif", "../../../../../../tmp/evil.tif"]
    results = fetch_many([DownloadItem(u, n) for u, n in zip(urls, names)], root, FAST)
    for r in results:
        r.path.resolve().relative_to(root.resolve())
    assert all_files(tmp_path) == ["resources/raw/panda/a/b.tif", "resources/raw/panda/etc/passwd",
                                   "resources/raw/panda/tmp/evil.tif"]
    assert http.name_from_url(server.base + "/x/%2e%2e%2f%2e%2e%2fetc%2fpasswd?q=1") == "passwd"
    assert http.name_from_url("https://h/dir/N34E108.SRTMGL1.hgt.zip") == "N34E108.SRTMGL1.hgt.zip"


def test_two_items_with_the_same_destination_are_refused(tmp_path):
    items = [DownloadItem("https://h/a/x.tif", "x.tif"), DownloadItem("https://h/b/x.tif", "./x.tif")]
    with pytest.raises(ValueError, match="same file name"):
        fetch_many(items, tmp_path, FAST)


def test_policy_checks_and_config_mapping():
    p = HttpPolicy.from_mapping({"retries": 5, "timeout": 10, "allow_http": True})
    assert (p.retries, p.timeout, p.allow_http, p.concurrency) == (5, 10, True, 4)
    assert HttpPolicy.from_mapping(None) == HttpPolicy()
    assert [HttpPolicy(backoff=1, backoff_max=5).delay(k) for k in (1, 2, 3, 4)] == [1, 2, 4, 5]
    with pytest.raises(ValueError, match="unknown"):
        HttpPolicy.from_mapping({"retry": 3})
    for bad in ({"retries": -1}, {"timeout": 0}, {"concurrency": 0}):
        with pytest.raises(ValueError):
            HttpPolicy(**bad)


def test_parse_content_range():
    assert http.parse_content_range("bytes 100-199/200") == (100, 199, 200)
    assert http.parse_content_range("bytes 0-9/*") == (0, 9, None)
    assert http.parse_content_range("items 0-9/10") is None and http.parse_content_range(None) is None


# --------------------------------------------------------------------------------------------
# many files
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(server, tmp_path, concurrency):
    files = {f"/c{i}.tif": payload(2_000, seed=i) for i in range(6)}
    items = [DownloadItem(server.add(p, d, modes=["delay"]), p[1:]) for p, d in files.items()]
    policy = HttpPolicy(concurrency=concurrency, allow_http=True, progress=False)
    results = fetch_many(items, tmp_path, policy)
    assert server.max_active == concurrency  # reached, never exceeded (each answer takes 0.15 s)
    assert [r.sha256 for r in results] == [sha(d) for d in files.values()]


def test_first_failure_cancels_the_rest_and_leaves_no_partial(server, tmp_path):
    good = [DownloadItem(server.add(f"/g{i}.tif", payload(1000, seed=i), modes=["delay"]), f"g{i}.tif")
            for i in range(8)]
    items = [DownloadItem(server.base + "/absent.tif", "absent.tif")] + good
    with pytest.raises(NotFoundError, match="absent.tif"):
        fetch_many(items, tmp_path, FAST)
    assert len(server.requests) < len(items)  # not every download was started
    assert not [f for f in all_files(tmp_path) if ".part" in f]


# --------------------------------------------------------------------------------------------
# DEM tile names
# --------------------------------------------------------------------------------------------

def test_copernicus_tile_names_all_hemispheres():
    names = {t.copernicus_name for t in dem.tiles_for_bbox([-1.5, -0.5, 0.5, 0.5], margin=0)}
    assert names == {f"Copernicus_DSM_COG_30_{ns}_00_{ew}_00_DEM"
                     for ns in ("S01", "N00") for ew in ("W002", "W001", "E000")}
    t = dem.DemTile(34, 108)
    assert dem.copernicus_url(t) == ("https://copernicus-dem-90m.s3.amazonaws.com/"
                                     "Copernicus_DSM_COG_30_N34_00_E108_00_DEM/Copernicus_DSM_COG_30_N34_00_E108_00_DEM.tif")
    assert dem.DemTile(-34, -58).copernicus_name == "Copernicus_DSM_COG_30_S34_00_W058_00_DEM"


def test_tiles_for_bbox_edges_margin_and_antimeridian():
    # Xi'an demo box: 108.70..109.15 E, 34.10..34.47 N
    assert dem.tiles_for_bbox([108.70, 34.10, 109.15, 34.47]) == [dem.DemTile(34, 108), dem.DemTile(34, 109)]
    # edges on whole degrees do not pull in neighbours; a margin does
    assert dem.tiles_for_bbox([108.0, 34.0, 109.0, 35.0], margin=0) == [dem.DemTile(34, 108)]
    assert len(dem.tiles_for_bbox([108.0, 34.0, 109.0, 35.0], margin=0.01)) == 9
    lons = {t.lon for t in dem.tiles_for_bbox([179.5, 10.2, 180.0, 10.8], margin=0.1)}
    assert lons == {179, -180}
    assert {t.lat for t in dem.tiles_for_bbox([0.2, 89.5, 0.4, 90.0], margin=0.5)} == {89}
    with pytest.raises(ValueError, match="west < east"):
        dem.tiles_for_bbox([2, 0, 1, 1])


def test_dem_url_template_expansion():
    t = dem.DemTile(-3, -60)
    assert dem.expand_template("https://m/{NS}{lat:02d}{EW}{lon:03d}.SRTMGL1.hgt.zip", t) == \
        "https://m/S03W060.SRTMGL1.hgt.zip"
    assert dem.expand_template("https://m/{ns}{lat:02d}_{ew}{lon:03d}/{lat_signed}_{lon_signed}.tif", t) == \
        "https://m/s03_w060/-3_-60.tif"
    with pytest.raises(ValueError, match="unknown field"):
        dem.expand_template("https://m/{row}.tif", t, key="sources.dem.url")
    with pytest.raises(ValueError, match="sources.dem.url"):
        dem.expand_template("https://m/{lat:02d", t, key="sources.dem.url")


# --------------------------------------------------------------------------------------------
# the http source (download_http)
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def cfg():
    c = yaml.safe_load((REPO / "config.yaml").read_text())
    c["run"]["first_year"], c["run"]["last_year"], c["run"]["target_years"] = 2000, 2002, [2001]
    c["download"] = {"retries": 2, "backoff": 0.001, "timeout": 2.0, "allow_http": True, "progress": False}
    return c


def test_download_http_panda_with_cut_and_checksums(server, tmp_path, cfg):
    data = {y: payload(30_000, seed=y) for y in (2000, 2001, 2002)}
    for y, d in data.items():
        server.add(f"/panda/v1/PANDA_China_{y}.tif", d, faults=["cut"] if y == 2001 else [])
    cfg["sources"]["panda"] = {"kind": "http", "url": server.base + "/panda/v1/{name}",
                               "pattern": "PANDA_China_{year}.tif",
                               "sha256": {"PANDA_China_2001.tif": sha(data[2001])}}
    out = tmp_path / "resources" / "raw" / "panda"
    mpath = download_http(cfg, "panda", out, [2000, 2001, 2002])
    doc = read_manifest(mpath)
    assert (doc["layer"], doc["source"]) == ("panda", "http")
    assert [(f["path"], f["sha256"], f["origin"]) for f in doc["files"]] == [
        (f"PANDA_China_{y}.tif", sha(d), f"{server.base}/panda/v1/PANDA_China_{y}.tif") for y, d in data.items()]
    assert verify_manifest(mpath) == []
    assert all_files(out) == sorted([f"PANDA_China_{y}.tif" for y in data] + ["manifest.json"])


def test_download_http_panda_missing_year_names_url(server, tmp_path, cfg):
    server.add("/p/PANDA_China_2000.tif", b"a")
    server.add("/p/PANDA_China_2002.tif", b"c")
    cfg["sources"]["panda"] = {"kind": "http", "url": server.base + "/p/PANDA_China_{year}.tif"}
    out = tmp_path / "raw" / "panda"
    with pytest.raises(NotFoundError) as ei:
        download_http(cfg, "panda", out, [2000, 2001, 2002])
    assert f"{server.base}/p/PANDA_China_2001.tif" in str(ei.value) and "404" in str(ei.value)
    assert not (out / "manifest.json").exists() and not [f for f in all_files(out) if ".part" in f]


def test_download_http_unreachable_leaves_no_file(tmp_path, cfg):
    cfg["sources"]["panda"] = {"kind": "http", "url": UNREACHABLE + "/{year}/PANDA_China_{year}.tif"}
    out = tmp_path / "resources" / "raw" / "panda"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as ei:
        download_http(cfg, "panda", out, [2000, 2001, 2002])
    assert time.monotonic() - t0 < 3.0
    assert "127.0.0.1:9/200" in str(ei.value) and "refused" in str(ei.value).lower()
    assert all_files(tmp_path) == []


def test_download_http_refuses_plain_http_by_default(tmp_path, cfg):
    del cfg["download"]
    cfg["sources"]["panda"] = {"kind": "http", "url": "http://example.org/{name}"}
    with pytest.raises(ValueError, match="allow_http"):
        download_http(cfg, "panda", tmp_path / "panda", [2000])
    assert all_files(tmp_path) == []


def test_panda_url_template_checks():
    with pytest.raises(ValueError, match="sources.panda.url"):
        panda_items({"kind": "http"}, [2000])
    with pytest.raises(ValueError, match=r"\{year\}"):
        panda_items({"kind": "http", "url": "https://h/{yr}.tif"}, [2000])
    with pytest.raises(ValueError, match=r"\{year\}"):
        panda_items({"kind": "http", "url": "https://h/fixed.tif"}, [2000])
    with pytest.raises(ValueError, match="nothing to download"):
        download_http({"sources": {"panda": {"kind": "http", "url": "https://h/{year}"}}}, "panda", "unused", [])
    items = panda_items({"kind": "http", "url": "https://h/{year}/{name}", "pattern": "P_{year}.tif"}, [1999])
    assert items == [DownloadItem("https://h/1999/P_1999.tif", "P_1999.tif")]


def test_check_http_source_messages_for_the_config_validator():
    assert check_http_source("panda", {"kind": "http", "url": "https://h/{year}/{name}"}) == []
    assert check_http_source("dem", {"kind": "http"}) == []  # built-in Copernicus list
    assert check_http_source("dem", {"kind": "http", "url": "https://m/{NS}{lat:02d}{EW}{lon:03d}.tif"}) == []
    (m,) = check_http_source("panda", {"kind": "http"})
    assert "sources.panda.url" in m and "required" in m
    (m,) = check_http_source("panda", {"kind": "http", "url": "http://h/{year}"})
    assert "'http://h/{year}'" in m and "allow_http" in m
    assert check_http_source("panda", {"kind": "http", "url": "http://h/{year}"}, allow_http=True) == []
    (m,) = check_http_source("dem", {"kind": "http", "url": "https://m/{row}.tif"})
    assert "sources.dem.url" in m and "row" in m
    (m,) = check_http_source("luojia", {"kind": "http", "url": "https://h/"})
    assert "panda and dem only" in m


def test_download_http_dem_skips_ocean_tiles(server, tmp_path, cfg):
    cfg["region"]["bbox"] = [-0.6, 10.2, 0.4, 10.6]  # tiles W001 and E000 at N10
    tile = payload(4_000, seed=9)
    server.add("/dem/N10W001.tif", tile)  # E000 is "ocean": 404
    cfg["sources"]["dem"] = {"kind": "http", "url": server.base + "/dem/{NS}{lat:02d}{EW}{lon:03d}.tif",
                             "sha256": {"N10W001.tif": sha(tile)}}
    out = tmp_path / "dem"
    doc = read_manifest(download_http(cfg, "dem", out, []))
    assert [(f["path"], f["sha256"], f["origin"]) for f in doc["files"]] == [
        ("N10W001.tif", sha(tile), server.base + "/dem/N10W001.tif")]
    assert sorted(p for p, _ in server.requests) == ["/dem/N10E000.tif", "/dem/N10W001.tif"]
    # no tile at all: an error naming the region
    cfg["region"]["bbox"] = [20.2, 10.2, 20.4, 10.4]
    with pytest.raises(FileNotFoundError, match="none of the 1 file"):
        download_http(cfg, "dem", tmp_path / "dem2", [])


def test_dem_items_default_to_copernicus_bucket(cfg):
    items = dem_items({"kind": "http"}, cfg["region"]["bbox"])
    assert [it.name for it in items] == ["Copernicus_DSM_COG_30_N34_00_E108_00_DEM.tif",
                                         "Copernicus_DSM_COG_30_N34_00_E109_00_DEM.tif"]
    assert all(it.optional and it.url.startswith("https://copernicus-dem-90m.s3.amazonaws.com/") for it in items)


def test_http_for_other_layers_is_refused(tmp_path, cfg):
    cfg["sources"]["landsat"] = {"kind": "http", "url": "https://h/{year}"}
    with pytest.raises(ValueError, match="panda and dem"):
        download_http(cfg, "landsat", tmp_path, [2000])


# --------------------------------------------------------------------------------------------
# example real configs
# --------------------------------------------------------------------------------------------

#: The schema addition proposed for the lead (top-level optional ``download`` section).
DOWNLOAD_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "retries": {"type": "integer", "minimum": 0, "maximum": 20},
        "backoff": {"type": "number", "minimum": 0},
        "backoff_max": {"type": "number", "minimum": 0},
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 32},
        "allow_http": {"type": "boolean"},
        "progress": {"type": "boolean"},
    },
}


def _keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("sources", "sha256"):
            out |= _keys(v, prefix + k + ".")
    return out


@pytest.mark.parametrize("name", ["xian_real.yaml", "shanghai_real.yaml"])
def test_example_real_configs(name, tmp_path):
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    c = yaml.safe_load((REPO / "workflow" / "configs" / name).read_text())
    assert _keys(c) - {"download", *(k for k in _keys(c) if k.startswith("download."))} == _keys(demo)
    s = copy.deepcopy(schema())
    s["properties"].setdefault("download", DOWNLOAD_SCHEMA)
    jsonschema.Draft202012Validator(s).validate(c)
    assert c["sources"]["panda"]["kind"] == "http" and c["sources"]["dem"] == {"kind": "http"}
    assert c["sources"]["luojia"]["kind"] == "local"
    # Xi'an reads Landsat through the STAC API, Shanghai from local scenes
    assert c["sources"]["landsat"]["kind"] == {"xian_real.yaml": "stac", "shanghai_real.yaml": "local"}[name]
    policy = HttpPolicy.from_mapping(c.get("download"))
    assert not policy.allow_http
    items = panda_items(c["sources"]["panda"], [2000]) + dem_items(c["sources"]["dem"], c["region"]["bbox"])
    for it in items:
        http.check_url(it.url, policy)
    assert json.dumps(c)  # plain data


_WIRED = "download" in schema()["properties"]


@pytest.mark.skipif(not _WIRED, reason="the http source is not wired into the config schema / CLI yet")
def test_cli_download_with_real_config_and_no_network_fails_cleanly(tmp_path, capsys):
    from pandafine.cli import main
    from pandafine.config import load_config

    for name in ("xian_real.yaml", "shanghai_real.yaml"):
        load_config(REPO / "workflow" / "configs" / name)  # the examples validate as shipped
    c = yaml.safe_load((REPO / "workflow" / "configs" / "xian_real.yaml").read_text())
    c["run"].update(first_year=2000, last_year=2001, target_years=[2001])
    c["sources"]["panda"]["url"] = UNREACHABLE + "/{name}"
    c["download"].update(allow_http=True, retries=1, backoff=0.01, progress=False)
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(c))
    out = tmp_path / "resources" / "raw" / "panda"
    assert main(["download", "--config", str(path), "--layer", "panda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: download of http://127.0.0.1:9/PANDA_China_200" in err and "refused" in err.lower()
    assert all_files(tmp_path) == ["real.yaml"]
