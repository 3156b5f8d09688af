"""pytest wiring for the interop tests: the `interop` marker, an importable
`peers` module and session fixtures that install the real peer programs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # `import peers` under any --import-mode
    sys.path.insert(0, _HERE)

import peers  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "interop: runs real js-libp2p / py-libp2p peer programs (installs them on "
        "first use via npm ci / pip into tests/interop)")


@pytest.fixture(scope="session")
def js_peer() -> Path:
    """Path of js/peer.mjs, after `npm ci` if needed."""
    return peers.ensure_js_peer()


@pytest.fixture(scope="session")
def py_peer() -> Path:
    """Python of the py-libp2p venv, after creating / installing it if needed."""
    return peers.ensure_py_peer()


@pytest.fixture(scope="session")
def interop_peers(js_peer: Path, py_peer: Path) -> None:
    """Both peer programs installed."""
    return None
