"""A robust HTTP(S) fetcher for the download stage (standard library only).

Every file is streamed to a temporary name beside its final path and renamed
only when it is complete and its sha256 matches the expected value (when one is
given), so nothing partial ever appears under a final name; on failure the
temporary file is removed.

* **Retries** with exponential backoff (``backoff * 2**k`` seconds, capped) on
  connection errors, timeouts, HTTP 5xx / 408 / 429, truncated bodies and
  checksum mismatches; other 4xx answers fail at once.
* **Resume**: after a cut, the next attempt asks for the rest with
  ``Range: bytes=N-``; a server answering 206 with the right ``Content-Range``
  is appended to, one answering 200 restarts the file from zero.
* **Missing files**: 404 / 410 raise :class:`NotFoundError`, or are skipped
  (``None``) for items marked ``optional`` (e.g. Copernicus ocean tiles).
* **Safety**: only ``https://`` unless :attr:`HttpPolicy.allow_http` (also for
  redirect targets); destination names coming from URLs or asset keys are
  sanitized (:func:`safe_relpath`) and can never leave the destination root.
* **Concurrency** is bounded by :attr:`HttpPolicy.concurrency`; the first
  failure cancels the remaining downloads (their temporary files are removed).
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pandafine.core.atomic import atomic_path
from pandafine.sources.manifest import sha256_file

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: HTTP statuses meaning "this file does not exist".
MISSING_STATUSES = frozenset({404, 410})
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._+=@,-]")


class DownloadError(RuntimeError):
    """A download failed for good; the message names the URL and the cause."""

    def __init__(self, url: str, cause: str):
        super().__init__(f"download of {url} failed: {cause}")
        self.url = url
        self.cause = cause


class NotFoundError(DownloadError):
    """The server says the file does not exist (HTTP 404 or 410)."""


class _Retryable(Exception):
    """An attempt failed in a way that another attempt may fix."""


class _Cancelled(Exception):
    """Another download of the same batch failed; stop this one."""


@dataclass(frozen=True)
class HttpPolicy:
    """How downloads are made.

    Attributes
    ----------
    retries : int
        Extra attempts after the first one for retryable failures.
    backoff : float
        Base delay in seconds; attempt ``k`` (1-based) waits ``backoff * 2**(k-1)``.
    backoff_max : float
        Upper bound of one delay (seconds).
    timeout : float
        Socket timeout (connect and each read), seconds.
    concurrency : int
        Most downloads running at once.
    allow_http : bool
        Accept plain ``http://`` URLs (and redirects to them); default https only.
    progress : bool
        Show a tqdm progress bar (only on a terminal).
    chunk : int
        Read size in bytes.
    """

    retries: int = 3
    backoff: float = 1.0
    backoff_max: float = 30.0
    timeout: float = 60.0
    concurrency: int = 4
    allow_http: bool = False
    progress: bool = True
    chunk: int = 1 << 20

    def __post_init__(self):
        if self.retries < 0:
            raise ValueError(f"HttpPolicy.retries={self.retries}: expected >= 0")
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValueError(f"HttpPolicy.backoff={self.backoff}, backoff_max={self.backoff_max}: expected >= 0")
        if not self.timeout > 0:
            raise ValueError(f"HttpPolicy.timeout={self.timeout}: expected > 0 seconds")
        if self.concurrency < 1:
            raise ValueError(f"HttpPolicy.concurrency={self.concurrency}: expected >= 1")
        if self.chunk < 1:
            raise ValueError(f"HttpPolicy.chunk={self.chunk}: expected >= 1 byte")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> "HttpPolicy":
        """A policy from the config's ``download`` section (missing keys keep their defaults)."""
        m = dict(m or {})
        known = {"retries", "backoff", "backoff_max", "timeout", "concurrency", "allow_http", "progress"}
        unknown = sorted(set(m) - known)
        if unknown:
            raise ValueError(f"download: unknown key(s) {unknown} (allowed: {sorted(known)})")
        return cls(**m)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return min(self.backoff_max, self.backoff * 2 ** (attempt - 1))


@dataclass(frozen=True)
class DownloadItem:
    """One file to fetch: its URL, its path relative to the destination root, its expected sha256."""

    url: str
    name: str
    sha256: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class FetchResult:
    """A completed download."""

    url: str
    path: Path
    size: int
    sha256: str


# --------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------

def check_url(url: str, policy: HttpPolicy) -> None:
    """Raise ``ValueError`` unless ``url`` is an https URL (or http when the policy allows it)."""
    parts = urllib.parse.urlsplit(url)
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme.lower() not in allowed:
        hint = " (set download.allow_http: true to accept plain http)" if parts.scheme.lower() == "http" else ""
        raise ValueError(f"URL {url!r}: scheme {parts.scheme or '(none)'!r} is not allowed; "
                         f"expected {' or '.join(allowed)}{hint}")
    if not parts.hostname:
        raise ValueError(f"URL {url!r}: no host name")


def _safe_component(part: str) -> str:
    part = _SAFE_CHARS.sub("_", part)
    if part.startswith("."):  # no hidden files (temporary files start with '.')
        part = "_" + part[1:]
    return part


def safe_relpath(name: str) -> str:
    """A relative POSIX path made from an untrusted name (URL path, STAC asset key).

    Splits on ``/`` and ``\\``, drops empty, ``.`` and ``..`` components (so the
    result can never climb out of a directory), replaces characters other than
    letters, digits and ``._+=@,-`` with ``_`` and hides no file behind a
    leading dot. Raises ``ValueError`` when nothing usable is left.
    """
    parts = [p for p in re.split(r"[\\/]+", str(name)) if p not in ("", ".", "..")]
    parts = [_safe_component(p) for p in parts]
    if not parts:
        raise ValueError(f"file name {name!r}: no usable path component")
    return "/".join(parts)


def name_from_url(url: str) -> str:
    """The sanitized file name of a URL: its last path segment, percent-decoded."""
    path = urllib.parse.urlsplit(url).path
    last = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    return safe_relpath(last).rsplit("/", 1)[-1] if last.strip("/\\.") else safe_relpath(last)


def safe_join(root: str | Path, name: str) -> Path:
    """``root / safe_relpath(name)``, checked to lie inside ``root`` (symbolic links included)."""
    root = Path(root)
    dest = root / safe_relpath(name)
    try:
        dest.resolve().relative_to(root.resolve())
    except ValueError:
        raise ValueError(f"file name {name!r}: resolves to {dest.resolve()}, outside {root.resolve()}") from None
    return dest


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``(start, end, total)`` of a ``Content-Range: bytes start-end/total`` header (total None for ``*``)."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


# --------------------------------------------------------------------------------------------
# one download
# --------------------------------------------------------------------------------------------

class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs the policy allows (no https -> http downgrade)."""

    def __init__(self, policy: HttpPolicy):
        super().__init__()
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl, self.policy)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(policy: HttpPolicy) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_RedirectHandler(policy))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"connection error: {exc.reason}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out ({exc})" if str(exc) else "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed mid-body ({len(exc.partial)} bytes read, {exc.expected} more expected)"
    return f"{type(exc).__name__}: {exc}"


def _attempt(opener, url: str, tmp: Path, policy: HttpPolicy, stop: threading.Event,
             progress: Callable[[int], None] | None) -> None:
    """One GET of ``url`` into ``tmp``, resuming from its current size when it has one."""
    have = tmp.stat().st_size if tmp.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "pandafine-downloader",
                                               "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = opener.open(req, timeout=policy.timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:  # our offset is past the end: start again
            tmp.unlink()
            raise _Retryable(f"HTTP 416 for Range bytes={have}-") from exc
        if exc.code in MISSING_STATUSES:
            raise NotFoundError(url, _describe(exc)) from None
        if exc.code in RETRY_STATUSES:
            raise _Retryable(_describe(exc)) from exc
        raise DownloadError(url, _describe(exc)) from None
    with resp:
        offset = 0
        if have and resp.status == 206:
            cr = parse_content_range(resp.headers.get("Content-Range"))
            if cr is None or cr[0] != have:
                tmp.unlink()
                raise _Retryable(f"unusable Content-Range {resp.headers.get('Content-Range')!r} "
                                 f"for Range bytes={have}-")
            offset = have
        elif resp.status != 200:
            raise DownloadError(url, f"unexpected HTTP status {resp.status}")
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        got = offset
        with open(tmp, "ab" if offset else "wb") as fh:
            while True:
                if stop.is_set():
                    raise _Cancelled()
                block = resp.read(policy.chunk)
                if not block:
                    break
                fh.write(block)
                got += len(block)
                if progress is not None:
                    progress(len(block))
        if expected is not None and got != expected:
            raise _Retryable(f"truncated body: {got} of {expected} bytes")


def fetch(item: DownloadItem, root: str | Path, policy: HttpPolicy = HttpPolicy(), *,
          stop: threading.Event | None = None, progress: Callable[[int], None] | None = None,
          sleep: Callable[[float], Any] | None = None) -> FetchResult | None:
    """Download one item into ``root / safe_relpath(item.name)``.

    Parameters
    ----------
    item : DownloadItem
        URL, destination name, expected sha256 (lower-case hex) and whether a 404 is acceptable.
    root : path
        Destination directory; the file never lands outside it.
    policy : HttpPolicy
    stop : threading.Event, optional
        When set (by another failed download), this one stops and cleans up.
    progress : callable, optional
        Called with the number of bytes of each block received.
    sleep : callable, optional
        Waits between attempts; default waits on ``stop`` (so a cancel interrupts it).

    Returns
    -------
    FetchResult or None
        None when the file does not exist and ``item.optional`` is true.

    Raises
    ------
    ValueError
        Bad URL scheme or unusable name.
    DownloadError
        After the last attempt, or at once for a non-retryable answer; names URL and cause.
    """
    check_url(item.url, policy)
    dest = safe_join(root, item.name)
    stop = stop if stop is not None else threading.Event()
    if stop.is_set():
        raise _Cancelled()
    sleep = sleep if sleep is not None else stop.wait
    want = item.sha256.lower() if item.sha256 else None
    if want and dest.is_file() and sha256_file(dest) == want:
        log.info("%s: already present with the expected sha256", dest)
        return FetchResult(item.url, dest, dest.stat().st_size, want)
    opener = _opener(policy)
    try:
        with atomic_path(dest) as tmp:
            last = "no attempt made"
            for attempt in range(policy.retries + 1):
                if attempt:
                    delay = policy.delay(attempt)
                    log.warning("%s: attempt %d failed (%s); retrying in %.3g s", item.url, attempt, last, delay)
                    sleep(delay)
                    if stop.is_set():
                        raise _Cancelled()
                try:
                    _attempt(opener, item.url, tmp, policy, stop, progress)
                except _Retryable as exc:
                    last = str(exc)
                    continue
                except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, SSL
                    last = _describe(exc)
                    continue
                digest = sha256_file(tmp)
                if want and digest != want:
                    last = f"sha256 {digest} differs from the expected {want}"
                    tmp.unlink()
                    continue
                size = tmp.stat().st_size
                break
            else:
                raise DownloadError(item.url, f"{last} (after {policy.retries + 1} attempt(s))")
    except NotFoundError:
        if item.optional:
            log.info("%s: not found on the server (optional, skipped)", item.url)
            return None
        raise
    return FetchResult(item.url, dest, size, digest)


# --------------------------------------------------------------------------------------------
# many downloads
# --------------------------------------------------------------------------------------------

def _progress_bar(policy: HttpPolicy, n: int):
    if not policy.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {n} file(s)",
                disable=None, leave=False)


def fetch_many(items: Sequence[DownloadItem], root: str | Path,
               policy: HttpPolicy = HttpPolicy()) -> list[FetchResult | None]:
    """Download ``items`` into ``root`` with at most ``policy.concurrency`` at once.

    Results are in the order of ``items`` (``None`` for skipped optional files).
    The first failure stops the others (their temporary files are removed) and
    is raised; the files completed before it stay in place.
    """
    items = list(items)
    dests = [safe_join(root, it.name) for it in items]
    if len({d.as_posix() for d in dests}) != len(dests):
        raise ValueError(f"{root}: two downloads map to the same file name: {sorted(d.name for d in dests)}")
    for it in items:
        check_url(it.url, policy)
    stop = threading.Event()
    bar = _progress_bar(policy, len(items))
    lock = threading.Lock()

    def progress(n: int) -> None:
        if bar is not None:
            with lock:
                bar.update(n)

    results: list[FetchResult | None] = [None] * len(items)
    try:
        with ThreadPoolExecutor(max_workers=min(policy.concurrency, max(1, len(items)))) as pool:
            futures = {pool.submit(fetch, it, root, policy, stop=stop, progress=progress): i
                       for i, it in enumerate(items)}
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None and not isinstance(f.exception(), _Cancelled)]
            if failed:
                stop.set()
                for f in pending:
                    f.cancel()
                wait(pending)
                first = min(failed, key=lambda f: futures[f])
                raise first.exception()
            for f, i in futures.items():
                results[i] = f.result()
    finally:
        if bar is not None:
            bar.close()
    return results
