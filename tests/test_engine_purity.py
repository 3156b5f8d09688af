"""Layers 1-3 must stay sans-IO: no sockets, threads or clocks in codecs, identity, engines."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "libp2p_stream_sync"
FORBIDDEN = {"socket", "selectors", "threading", "time", "asyncio"}
PURE_DIRS = ("codec", "identity", "engines")


def _imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


PURE_FILES = sorted(p for d in PURE_DIRS for p in (PACKAGE / d).rglob("*.py"))


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_has_no_io_imports(path):
    assert not (_imported_modules(path) & FORBIDDEN)


def test_the_check_sees_forbidden_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom socket import socket\n")
    assert _imported_modules(bad) & FORBIDDEN == {"time", "socket"}
