"""The README and docs/ stand alone: every link and document reference resolves
inside the repository, and nothing points at documents a user does not have.

- Every relative Markdown link in README.md and docs/*.md names a file that
  exists; a `#anchor` into a Markdown file names one of its headings
  (GitHub's heading slugs).
- Every `docs/<name>.md` mentioned anywhere in the repository (README, code
  comments, tests) exists, and every "docs/contract.md section N" (or
  "sections N and M") names a numbered section of that file.
- No file mentions the documents that lived outside the repository.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
DOC_REF = re.compile(r"\bdocs/([\w.-]+\.md)\b")
SECTION_REF = re.compile(r"\bdocs/([\w.-]+\.md) sections? (\d+)(?: and (\d+))?")
# Built from pieces so that this file does not mention them itself.
OUTSIDE = ("../" + "shared", "SPEC" + ".md", "EXAMPLES" + ".md", "DESIGN" + ".md")
OUTSIDE_SECTION = re.compile(r"\b" + "SPEC" + r"(?: sections?)? \d")
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def repo_files() -> list[Path]:
    """The repository's files: git's list (tracked and new, not ignored), else a walk."""
    try:
        names = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "ls-files", "-co", "--exclude-standard"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.splitlines()
        return [REPO_ROOT / n for n in names if (REPO_ROOT / n).is_file()]
    except (OSError, subprocess.SubprocessError):
        return [
            p
            for p in REPO_ROOT.rglob("*")
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(REPO_ROOT).parts)
        ]


def texts() -> list[tuple[Path, str]]:
    out = []
    for path in repo_files():
        try:
            out.append((path, path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue  # binary
    return out


def test_docs_exist() -> None:
    for name in ("README.md", "LICENSE", "docs/contract.md", "docs/design.md"):
        assert (REPO_ROOT / name).is_file(), name


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{doc.name}: {broken}"


def test_docs_references_resolve_everywhere() -> None:
    broken = []
    for path, text in texts():
        where = path.relative_to(REPO_ROOT)
        for name in DOC_REF.findall(text):
            if not (REPO_ROOT / "docs" / name).is_file():
                broken.append(f"{where}: docs/{name} does not exist")
        for name, *numbers in SECTION_REF.findall(text):
            target = REPO_ROOT / "docs" / name
            if not target.is_file():
                continue  # reported above
            headings = {h.split("-", 1)[0] for h in anchors(target)}
            for n in filter(None, numbers):
                if n not in headings:
                    broken.append(f"{where}: docs/{name} has no section {n}")
    assert not broken, broken


def test_contract_sections_are_numbered() -> None:
    """The sections the code cites by number: "## N. Title", N = 1, 2, 3, ..."""
    numbers = re.findall(r"^## (\d+)\. ", (REPO_ROOT / "docs/contract.md").read_text(), re.M)
    assert [int(n) for n in numbers] == list(range(1, len(numbers) + 1))
    assert len(numbers) >= 7


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path, text in texts():
        where = path.relative_to(REPO_ROOT)
        found += [f"{where}: {word}" for word in OUTSIDE if word in text]
        found += [f"{where}: {m.group(0)!r}" for m in OUTSIDE_SECTION.finditer(text)]
    assert not found, found
