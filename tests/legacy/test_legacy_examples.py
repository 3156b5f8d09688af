"""The legacy examples run as written, as subprocesses, and exit 0."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name, expected", [
    ("socketserver_echo.py", ["hello 0", "hello 1", "hello 2", "done"]),
    ("http_over_libp2p.py", ["200 OK text/plain", "Hello from a libp2p peer!",
                             "bytes of listing", "done"]),
])
def test_example_runs(name, expected, tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    pos = 0
    for want in expected:  # every expected piece, in order
        found = result.stdout.find(want, pos)
        assert found >= 0, f"{want!r} missing from:\n{result.stdout}"
        pos = found + len(want)
    assert result.stdout.splitlines()[-1] == "done"
    assert "Traceback" not in result.stderr
