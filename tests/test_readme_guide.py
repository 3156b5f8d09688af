"""What the README tells a Python user is true: loggers, compatibility claims, the test
commands, and the accept queue's relation to the TCP backlog."""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import re
import subprocess
import sys

from libp2p_stream_sync.transport import tcp

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PACKAGE = ROOT / "libp2p_stream_sync"
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def section(title: str) -> str:
    """The text of the README's ``## <title>`` section ('' if there is none)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.S | re.M)
    return match.group(1) if match else ""


def opening() -> str:
    return README.split("\n## ", 1)[0]


def code_loggers() -> set[str]:
    """The names of the loggers the package's modules create."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if "getLogger(__name__)" in text:
            names.add(module.removesuffix(".__init__"))
        names.update(re.findall(r'getLogger\("(libp2p_stream_sync[\w.]*)"\)', text))
    return names


def test_logging_section_names_every_logger_of_the_library():
    text = section("Logging")
    named = set(re.findall(r"`(libp2p_stream_sync[\w.]*)`", text))
    loggers = code_loggers()
    assert loggers, "found no loggers in the package"
    assert loggers - named == set(), "loggers the README does not name"
    assert named - loggers - {"libp2p_stream_sync"} == set(), "names that log nothing"
    assert "multiaddr" in text and "DEBUG" in text


def test_logging_recipe_shows_the_library_and_silences_multiaddr():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section("Logging"), flags=re.S)]
    assert len(blocks) == 1, "the Logging section has no python recipe"
    script = blocks[0] + "\n".join([
        "from libp2p_stream_sync import Node",
        "with Node(listen=['/ip4/127.0.0.1/tcp/0']) as server, Node() as client:",
        "    client.dial(f'{server.listen_addrs[0]}/p2p/{server.peer_id}', timeout=10)",
        "    client.ping(server.peer_id, timeout=10)",
    ])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=ENV, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(" DEBUG libp2p_stream_sync." in line for line in lines), result.stderr
    assert not any(" multiaddr" in line for line in lines), result.stderr


def test_multiaddr_does_log_at_debug_without_the_recipe():
    script = ("import logging\nlogging.basicConfig(level=logging.DEBUG)\n"
              "from libp2p_stream_sync import Node\n"
              "with Node(listen=['/ip4/127.0.0.1/tcp/0']) as node:\n"
              "    str(node.listen_addrs[0])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=ENV, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "DEBUG:multiaddr" in result.stderr  # why the README's recipe silences it
    assert "`multiaddr.transforms`" in section("Logging")


def matrix_peers() -> set[str]:
    rows = re.findall(r"^\| (\w+) \| (?:they dial us|we dial them) \|", README, flags=re.M)
    return set(rows)


def test_opening_claims_only_what_the_interop_matrix_proves():
    text = opening()
    assert "byte-compatible with go" not in text
    tested = matrix_peers()
    assert tested == {"js", "py"}
    js_version = json.loads((ROOT / "tests/interop/js/package.json").read_text())[
        "dependencies"]["libp2p"]
    py_version = re.search(r"^libp2p==(\S+)$",
                           (ROOT / "tests/interop/py/requirements.txt").read_text(),
                           flags=re.M).group(1)
    assert f"js-libp2p {js_version.rsplit('.', 1)[0]}" in text
    assert f"py-libp2p {py_version}" in text
    not_yet = re.search(r"^\* \*\*Not yet: (.*?)(?=^\S|\Z)", text, flags=re.S | re.M)
    assert not_yet, "the opening does not say what is not proven yet"
    assert "Wire compatibility" in text
    claims = text.split("Wire compatibility", 1)[1].replace(not_yet.group(0), "")
    named = set(re.findall(r"\b(go|rust|js|py)-(?:libp2p|yamux)", text))
    untested = named - tested
    assert untested == {"go", "rust"}
    for name in untested:  # named only where the README says it is not tested
        assert f"{name}-libp2p" in not_yet.group(1)
        assert f"{name}-" not in claims
        assert not re.search(rf"compatible with[^.]*\b{name}-", " ".join(text.split()))


def test_tests_section_says_what_is_installed_how_long_and_the_fast_subset():
    text = section("Tests")
    assert "npm ci" in text and "tests/interop/js/node_modules/" in text
    assert "tests/interop/.py-libp2p-venv/" in text
    assert re.search(r"about \d+(\.\d+)? (s|min)", text), "no duration"
    commands = re.findall(r"^(python3 -m pytest [^#\n]*?)\s*(?:#.*)?$", text, flags=re.M)
    fast = [c for c in commands if "interop" in c]
    assert fast, "no command for the suite without the interop peers"
    command = [sys.executable] + fast[0].split()[1:] + ["--collect-only", "-q"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    items = [line for line in result.stdout.splitlines() if "::" in line]
    assert len(items) > 100
    assert not [item for item in items if item.startswith("tests/interop")]


def test_readme_relates_accept_capacity_to_the_tcp_listen_backlog():
    backlog = inspect.signature(tcp.open_listener).parameters["backlog"].default
    paragraphs = [" ".join(p.split()) for p in README.split("\n\n")]
    paragraphs = [p for p in paragraphs if "backlog" in p and "capacity" in p and "listen" in p]
    assert paragraphs, "no paragraph explains capacity against the listen backlog"
    assert any(f"{backlog} on the node's TCP listeners" in p for p in paragraphs)
