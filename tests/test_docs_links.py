"""The documentation's links: README.md and docs/**/*.md (no network).

* every relative Markdown link ``[text](target)`` points at a file or folder that exists, inside
  the repository (external ``http(s)://`` and ``mailto:`` links and pure ``#anchor`` links are not
  checked; a ``#fragment`` is stripped before the check);
* every page under docs/ is reachable from README.md by following relative links;
* README.md stays short (the details live in docs/);
* no page is ignored by git (the top-level ``results/`` pattern would hide docs/results/).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import deque
from pathlib import Path

import pytest

from repo_paths import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_BYTES = 10_500

#: Inline links and images: ``[text](target)`` / ``![alt](target "title")``. The target ends at
#: the first blank or closing parenthesis; ``<target>`` (angle brackets) is accepted too.
LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\(\s*(?:<(?P<angle>[^>]*)>|(?P<target>[^)\s]*))(?:\s+[^)]*)?\)")
#: Fenced code blocks (``` or ~~~), whose contents are not Markdown.
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,}).*?^(?P=indent)?(?P=fence)[ \t]*$", re.M | re.S)
#: Inline code spans.
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
SKIPPED_PREFIXES = ("http://", "https://", "mailto:")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def strip_code(text: str) -> str:
    """Text with fenced code blocks and inline code spans blanked out (their lines kept)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)


def relative_links(md: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link in ``md``, fragment stripped."""
    text = strip_code(md.read_text(encoding="utf-8"))
    links = []
    for m in LINK.finditer(text):
        target = (m.group("angle") if m.group("angle") is not None else m.group("target")).strip()
        if not target or target.startswith("#") or target.lower().startswith(SKIPPED_PREFIXES):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path:
            links.append((text.count("\n", 0, m.start()) + 1, path))
    return links


def rel(p: Path) -> str:
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return str(p)


def resolve(md: Path, target: str) -> Path:
    return (md.parent / target).resolve()


def test_markdown_files_found():
    assert README.is_file(), "README.md is missing"
    assert any(DOCS.rglob("*.md")), "docs/ holds no Markdown pages"


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: rel(p))
def test_relative_links_exist_inside_repository(md: Path):
    problems = []
    for line, target in relative_links(md):
        dest = resolve(md, target)
        if not dest.is_relative_to(REPO):
            problems.append(f"{rel(md)}:{line}: link '{target}' points outside the repository ({dest})")
        elif not dest.exists():
            problems.append(f"{rel(md)}:{line}: link '{target}' points at a missing file ({rel(dest)})")
    assert not problems, "broken documentation links:\n" + "\n".join(problems)


def test_every_docs_page_reachable_from_readme():
    seen = {README.resolve()}
    queue = deque([README.resolve()])
    while queue:
        md = queue.popleft()
        for _, target in relative_links(md):
            dest = resolve(md, target)
            if dest.is_dir():
                index = dest / "README.md"
                dest = index if index.is_file() else dest
            if dest.suffix == ".md" and dest.is_file() and dest.is_relative_to(REPO) and dest not in seen:
                seen.add(dest)
                queue.append(dest)
    unreachable = [rel(p) for p in sorted(DOCS.rglob("*.md")) if p.resolve() not in seen]
    assert not unreachable, (
        "docs pages not reachable from README.md by following relative links (link them from README.md "
        "or from a page it links to):\n" + "\n".join(unreachable))


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes, more than {README_MAX_BYTES}: move details into a docs/ page and link it")


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: rel(p))
def test_no_reference_outside_repository(md: Path):
    """Users have only the repository: no page may send them to the private ../shared folder."""
    hits = [f"{rel(md)}:{n}: {line.strip()}" for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1)
            if "../shared" in line]
    assert not hits, "references to ../shared (not part of the repository):\n" + "\n".join(hits)


def test_docs_pages_not_ignored_by_git():
    """A page git ignores would be missing from every clone (and its links broken there)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    pages = [rel(p) for p in markdown_files()]
    out = subprocess.run(["git", "check-ignore", "--no-index", "--", *pages], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode in (0, 1), f"git check-ignore failed: {out.stderr}"
    ignored = out.stdout.split()
    assert not ignored, "documentation pages ignored by git (fix the .gitignore rules):\n" + "\n".join(ignored)
