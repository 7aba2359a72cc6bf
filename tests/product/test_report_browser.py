"""The headless-browser checker (tests/browser.py) on small pages with known faults.

The tiny workflow's ``snakemake --report`` page itself is checked in
tests/workflow/test_workflow.py::test_report_opens_in_headless_browser (it reuses that module's
workflow run). These tests show the checker catches what it must catch: a check that
reports nothing on a broken page would make that test worthless.

They need Debian's ``chromium`` (or ``$PANDAFINE_CHROMIUM``) and are skipped without it,
unless ``PANDAFINE_BROWSER_TEST=1`` (set by .ci/run), where a missing browser fails.
"""

from __future__ import annotations

import os

import pytest

from browser import find_chromium, load_page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("PANDAFINE_BROWSER_TEST") == "1":
            pytest.fail("PANDAFINE_BROWSER_TEST=1 but no chromium: apt-get install chromium")
        pytest.skip("no chromium on PATH (apt-get install chromium, or set PANDAFINE_CHROMIUM)")
    return path


def test_clean_page_has_no_problem_and_its_script_ran(tmp_path, chromium):
    (tmp_path / "dot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="3" height="2"/>')
    page = tmp_path / "ok.html"
    page.write_text('<html><body><img id="i" src="dot.svg"><div id="app"></div><script>'
                    'document.getElementById("app").textContent = ["Product", "Model"].join(",");'
                    'console.log("fine"); console.warn("only a warning");</script></body></html>')
    rep = load_page(page, ready="document.getElementById('app').textContent.length > 0",
                    checks={"app": "document.getElementById('app').textContent",
                            "img": "document.getElementById('i').decode().then(() => "
                                   "document.getElementById('i').naturalWidth)"},
                    chromium=chromium)
    assert rep.problems == []
    assert rep.values == {"app": "Product,Model", "img": 3}


def test_every_kind_of_fault_is_recorded(tmp_path, chromium):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="missing.png">'
                    '<script>console.error("boom-1");</script>'
                    '<script>notDefinedAnywhere();</script>'
                    '<script src="https://cdn.invalid/lib.js"></script>'
                    '<script>Promise.reject(new Error("rejected-2"));</script></body></html>')
    rep = load_page(page, checks={"throws": "(() => { throw new Error('check-3'); })()"}, chromium=chromium,
                    timeout=30)
    text = "\n".join(rep.problems)
    assert "console.error: boom-1" in text
    assert "notDefinedAnywhere is not defined" in text
    assert "rejected-2" in text  # unhandled promise rejection
    assert "check 'throws' threw" in text and "check-3" in text
    assert any(r.startswith("file://") and r.endswith("missing.png: net::ERR_FILE_NOT_FOUND")
               for r in rep.failed_requests), rep.failed_requests
    assert rep.external_requests == ["https://cdn.invalid/lib.js"]
    assert any("cdn.invalid/lib.js" in r for r in rep.failed_requests)  # no network in tests


def test_page_never_ready_is_a_problem(tmp_path, chromium):
    page = tmp_path / "slow.html"
    page.write_text("<html><body><div id='app'></div></body></html>")
    rep = load_page(page, ready="document.getElementById('app').childElementCount > 0", chromium=chromium,
                    timeout=2)
    assert any("not ready within 2 s" in p for p in rep.problems)
