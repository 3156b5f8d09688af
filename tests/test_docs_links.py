"""The repository stands alone: its Markdown never points to files outside it.

Checked in every Markdown file of the checkout (installed peers' trees excluded):
relative links and ``../`` paths must resolve inside the repository, no absolute
filesystem path appears, and every path written from the repository root
(``docs/DESIGN.md``, ``libp2p_stream_sync/limits.py``, ...) names a file that exists.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", "node_modules", ".py-libp2p-venv", "__pycache__", ".pytest_cache"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PARENT_PATH = re.compile(r"(?<![\w.])((?:\.\./)+[\w./-]*)")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:work|home|root|tmp|opt|usr|mnt)/[\w./-]*")
BACKTICKED = re.compile(r"`([^`\s]+)`")


def markdown_files() -> list[pathlib.Path]:
    return sorted(path for path in ROOT.rglob("*.md")
                  if not SKIP_DIRS & set(path.relative_to(ROOT).parts))


def inside_repo(path: pathlib.Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def root_entries() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.name not in SKIP_DIRS}


def problems(path: pathlib.Path) -> list[str]:
    text = path.read_text()
    found = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the page
        linked = path.parent / target.split("#", 1)[0]
        if not (inside_repo(linked) and linked.exists()):
            found.append(f"link {target}")
    for target in PARENT_PATH.findall(text):
        if not (inside_repo(path.parent / target) and (path.parent / target).exists()):
            found.append(f"path {target}")
    found += [f"absolute path {target}" for target in ABSOLUTE_PATH.findall(text)]
    entries = root_entries()
    for token in BACKTICKED.findall(text):
        first = token.split("/", 1)[0]
        is_file = "." in token.rsplit("/", 1)[-1]  # directories may be made on demand
        if "/" in token and first in entries and is_file and not (ROOT / token).exists():
            found.append(f"missing {token}")
        elif re.fullmatch(r"[A-Z][\w-]*\.md", token) and not (
                (ROOT / token).exists() or (path.parent / token).exists()):
            found.append(f"missing {token}")
    return found


def test_the_scan_covers_the_documentation_and_catches_outside_references():
    names = {str(p.relative_to(ROOT)) for p in markdown_files()}
    assert {"README.md", "RELIABILITY.md", "docs/ENGINES.md", "docs/DESIGN.md",
            "docs/PERF-FACTS.md", "tests/interop/README.md"} <= names
    page = ROOT / "docs" / "ENGINES.md"
    assert PARENT_PATH.findall("see `../shared/DESIGN.md`") == ["../shared/DESIGN.md"]
    assert not inside_repo(page.parent / "../../shared/DESIGN.md")
    assert ABSOLUTE_PATH.findall("in /work/shared/PERF-FACTS.md") == [
        "/work/shared/PERF-FACTS.md"]
    assert ABSOLUTE_PATH.findall("listen on /ip4/127.0.0.1/tcp/0 or `/echo/1.0.0`") == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_leaves_the_repository(path):
    assert problems(path) == []
