"""Open an HTML page in headless Chromium and record what went wrong while it loaded.

A small client of the Chrome DevTools Protocol over ``--remote-debugging-pipe``
(file descriptors 3 and 4, messages separated by NUL bytes), so no websocket
library is needed. It records uncaught JavaScript exceptions, ``console.error``
calls, browser log entries of level ``error`` (failed resource loads, blocked
content), failed network requests and every request for a URL that is neither
``file:``, ``data:``, ``blob:`` nor ``about:`` (the page would need the network).

Used by tests/product/test_report_browser.py (the checker itself, on small pages) and by
tests/workflow/test_workflow.py (the tiny workflow's ``snakemake --report`` output).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: URL schemes a self-contained page may load without the network.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")


def find_chromium() -> str | None:
    """Path of the Chromium executable (``$PANDAFINE_CHROMIUM`` or ``chromium`` on PATH), or None."""
    explicit = os.environ.get("PANDAFINE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    """What happened while a page loaded.

    Attributes
    ----------
    errors : list of str
        Uncaught exceptions, ``console.error``/``assert`` calls and browser log errors.
    failed_requests : list of str
        Requests that failed (URL and network error text).
    external_requests : list of str
        URLs requested outside :data:`LOCAL_SCHEMES`.
    values : dict
        Results of the expressions evaluated after loading, by name.
    """

    errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Every recorded problem, one line each (empty: the page loaded cleanly)."""
        return ([f"error: {e}" for e in self.errors] + [f"failed request: {r}" for r in self.failed_requests]
                + [f"external request: {u}" for u in self.external_requests])


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


class _Pipe:
    """DevTools protocol over the two pipes of ``--remote-debugging-pipe``."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.write_fd, data):]
        return self.next_id

    def _read_one(self, deadline: float) -> dict | None:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed the DevTools pipe (exit status {self.proc.poll()})")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        """Send a command and wait for its answer; events read meanwhile are kept in ``events``."""
        mid = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_one(deadline)
            if msg is None:
                raise BrowserError(f"no answer to {method} within {timeout:g} s")
            if msg.get("id") == mid:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def drain(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            msg = self._read_one(deadline)
            if msg is None:
                return
            if "method" in msg:
                self.events.append(msg)


def _high_fd(fd: int) -> int:
    """``fd`` moved to a number >= 10 (close-on-exec), so that it never collides with 3 or 4."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


def _start(chromium: str, profile_dir: str) -> _Pipe:
    cmd_r, cmd_w = map(_high_fd, os.pipe())
    res_r, res_w = map(_high_fd, os.pipe())
    # bash places the pipes on the descriptors --remote-debugging-pipe expects: 3 (commands), 4 (answers).
    trampoline = f'exec "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-'
    args = [chromium, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--mute-audio", f"--user-data-dir={profile_dir}", "about:blank"]
    try:
        proc = subprocess.Popen(["bash", "-c", trampoline, "bash", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(cmd_r, res_w))
    finally:
        os.close(cmd_r)
        os.close(res_w)
    return _Pipe(proc, cmd_w, res_r)


def _describe_exception(params: dict) -> str:
    det = params.get("exceptionDetails", {})
    exc = det.get("exception", {})
    text = exc.get("description") or det.get("text", "exception")
    where = det.get("url", "")
    return f"{text.splitlines()[0] if text else 'exception'} ({where}:{det.get('lineNumber', '?')})"


def _describe_console(params: dict) -> str:
    parts = []
    for arg in params.get("args", []):
        parts.append(str(arg.get("value", arg.get("description", arg.get("type", "")))))
    return f"console.{params.get('type')}: {' '.join(parts)}"


def _collect(events: list[dict], report: PageReport) -> None:
    urls: dict[str, str] = {}
    for ev in events:
        method, p = ev["method"], ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            report.errors.append(_describe_exception(p))
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            report.errors.append(_describe_console(p))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            report.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            urls[p.get("requestId")] = url
            if not url.startswith(LOCAL_SCHEMES):
                report.external_requests.append(url)
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            url = urls.get(p.get("requestId"), "?")
            report.failed_requests.append(f"{url[:200]}: {p.get('errorText')}")


def load_page(path: str | Path, *, ready: str = "document.readyState === 'complete'",
              checks: dict[str, str] | None = None, chromium: str | None = None, timeout: float = 60.0,
              settle: float = 0.5) -> PageReport:
    """Load ``path`` in headless Chromium, wait until ``ready`` is true, then evaluate ``checks``.

    Parameters
    ----------
    path : path-like
        The HTML file (opened as a ``file://`` URL).
    ready : str
        JavaScript expression polled after the load event until it is truthy.
    checks : dict of str, optional
        Name -> JavaScript expression (may return a promise), evaluated in the page
        after ``ready``; their JSON values land in :attr:`PageReport.values`.
        An expression that throws is recorded as an error.
    chromium : str, optional
        Executable (default: :func:`find_chromium`).
    timeout : float
        Seconds allowed for the load, for ``ready`` and for each check.
    settle : float
        Seconds to keep listening after the checks, for late errors.

    Returns
    -------
    PageReport
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise BrowserError("no chromium executable (install Debian's chromium or set PANDAFINE_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    report = PageReport()
    with tempfile.TemporaryDirectory(prefix="pandafine-chromium-") as profile:
        pipe = _start(chromium, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                pipe.call(f"{domain}.enable", session=session)
            nav = pipe.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
            if nav.get("errorText"):
                report.errors.append(f"navigation to {url} failed: {nav['errorText']}")
                return report
            deadline = time.monotonic() + timeout
            while True:
                state = pipe.call("Runtime.evaluate", {"expression": f"Boolean({ready})", "returnByValue": True},
                                  session=session, timeout=timeout)
                if state.get("result", {}).get("value") is True:
                    break
                if time.monotonic() > deadline:
                    report.errors.append(f"page not ready within {timeout:g} s: {ready}")
                    break
                pipe.drain(0.1)
            for name, expr in (checks or {}).items():
                res = pipe.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                                session=session, timeout=timeout)
                if "exceptionDetails" in res:
                    report.errors.append(f"check {name!r} threw: {_describe_exception(res)}")
                else:
                    report.values[name] = res.get("result", {}).get("value")
            pipe.drain(settle)
        finally:
            try:
                pipe.send("Browser.close")
                pipe.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pipe.proc.kill()
                pipe.proc.wait()
            os.close(pipe.write_fd)
            os.close(pipe.read_fd)
        _collect(pipe.events, report)
    return report


#: Ready condition of a ``snakemake --report`` page: its script has hidden the loading screen.
REPORT_READY = ("document.querySelector('#loading-screen') !== null && "
                "document.querySelector('#loading-screen').style.display === 'none' && "
                "document.querySelector('#app').childElementCount > 0")

#: Walks a Snakemake 9 report as a user does: every category of the menu, then the "eye" button of
#: every image and HTML result; images must decode, HTML results (shown in an iframe) are fetched
#: back and their table rows counted. Returns ``{menu, categories: {cat: text}, shown: {path: info}}``.
REPORT_WALK = r"""
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (f, ms = 5000) => {
    for (let t = 0; t < ms; t += 25) { const v = f(); if (v) return v; await sleep(25); }
    return null;
  };
  const out = {menu: document.querySelector('#app').innerText, categories: {}, shown: {}};
  const link = text => [...document.querySelectorAll('#app nav a')].find(a => a.textContent.trim() === text);
  for (const cat of Object.keys(categories)) {
    for (const sub of Object.keys(categories[cat])) {
      // as a user: back to the menu, click the category, then the subcategory if there are several
      app.setView({navbarMode: 'menu'});
      const catLink = await until(() => link(cat));
      if (!catLink) { out.categories[cat + '/' + sub] = null; continue; }
      catLink.click();
      if (Object.keys(categories[cat]).length > 1) {
        const subLink = await until(() => link(sub));
        if (subLink) subLink.click();
      }
      const paths = categories[cat][sub];
      await until(() => paths.every(p => document.querySelector('#app').innerText.includes(p)));
      out.categories[cat + '/' + sub] = document.querySelector('#app').innerText;
      for (const path of paths) {
        const mime = results[path].mime_type;
        const info = {mime: mime, name: results[path].name};
        out.shown[path] = info;
        if (!(mime.startsWith('image/') || mime === 'text/html')) continue;
        const cell = [...document.querySelectorAll('#app td')].find(td => td.textContent.trim() === path);
        const eye = cell && cell.parentElement.querySelector('a[iconname="eye"]');
        if (!eye) { info.error = 'no view button'; continue; }
        eye.click();
        const uri = results[path].data_uri;
        if (mime === 'text/html') {
          const frame = await until(() => [...document.querySelectorAll('iframe')].find(f => f.src === uri));
          if (!frame) { info.error = 'no iframe'; continue; }
          const doc = new DOMParser().parseFromString(await (await fetch(frame.src)).text(), 'text/html');
          info.rows = doc.querySelectorAll('tr').length;
          info.text = doc.body.innerText || doc.body.textContent;
        } else {
          const img = await until(() => [...document.querySelectorAll('img')].find(i => i.src === uri));
          if (!img) { info.error = 'no img'; continue; }
          try { await img.decode(); } catch (e) { info.error = 'decode: ' + e; continue; }
          info.width = img.naturalWidth;
          info.height = img.naturalHeight;
        }
      }
    }
  }
  return out;
})()
"""


def check_snakemake_report(path: str | Path, **kwargs) -> PageReport:
    """Load a ``snakemake --report`` HTML file and walk it (:data:`REPORT_WALK`); values under ``"walk"``."""
    return load_page(path, ready=REPORT_READY, checks={"walk": REPORT_WALK}, **kwargs)


if __name__ == "__main__":  # python tests/browser.py report.html: the problems and what was shown
    import sys

    rep = check_snakemake_report(sys.argv[1])
    walk = rep.values.get("walk") or {}
    for p, info in (walk.get("shown") or {}).items():
        print(p, {k: v for k, v in info.items() if k != "text"})
    print("\n".join(rep.problems) or "no problem: no JavaScript error, no failed or external request")
    sys.exit(1 if rep.problems or not walk else 0)
