"""The package ships its type annotations (PEP 561) and type checkers see them."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Uses the public API as an application would; every annotation it relies on must exist
# (mypy --strict rejects calls into unannotated code and values of unknown type).
API_SCRIPT = textwrap.dedent('''
    import threading

    from libp2p_stream_sync import (Control, IncomingStreams, Keypair, Limits, Node, PeerId,
                                    PerfResult, Stream, UnsupportedProtocol, serve_echo)


    def serve(incoming: IncomingStreams) -> None:
        for peer, stream in incoming:
            with stream:
                stream.write(stream.readall())


    def main() -> None:
        keypair = Keypair.from_bytes(Keypair.generate().to_bytes())
        with Node(keypair, listen=["/ip4/127.0.0.1/tcp/0"], limits=Limits()) as server:
            incoming = server.new_control().accept("/echo/1.0.0", capacity=16)
            threading.Thread(target=serve, args=(incoming,), daemon=True).start()
            control: Control = server.new_control().clone()
            peer: PeerId = server.dial("/ip4/127.0.0.1/tcp/4001", timeout=5.0)
            stream: Stream = control.open_stream(peer, "/echo/1.0.0", timeout=5.0)
            stream.settimeout(None)
            stream.close_write()
            rtts: list[float] = server.ping(peer, count=1)
            result: PerfResult = server.perf(peer, 0, 0)
            try:
                control.open_stream(peer, "/nope/1.0.0")
            except UnsupportedProtocol as exc:
                refused: str = exc.protocol
            serve_echo(server.new_control()).close()
            reveal_type(server.peer_id)
            reveal_type(stream.read(1))
            reveal_type(incoming.get(timeout=0))
            print(rtts, result, refused)
''')


def test_py_typed_is_in_the_package_and_in_its_build(tmp_path):
    assert (ROOT / "libp2p_stream_sync" / "py.typed").is_file()
    # What setuptools would put in a wheel: build_py copies modules and package data.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "libp2p_stream_sync", tmp_path / "libp2p_stream_sync",
                    ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
         "build_py", "--build-lib", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "out" / "libp2p_stream_sync" / "py.typed").is_file()


def test_mypy_strict_sees_the_public_annotations(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(API_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert 'Revealed type is "libp2p_stream_sync.identity.peer_id.PeerId"' in out
    assert 'Revealed type is "bytes"' in out
    assert ('Revealed type is "tuple[libp2p_stream_sync.identity.peer_id.PeerId, '
            'libp2p_stream_sync.stream.Stream]"') in out


def test_mypy_reports_a_wrong_use_of_the_api(tmp_path):
    script = tmp_path / "wrong.py"
    script.write_text("from libp2p_stream_sync import Node\n"
                      "port: int = Node().peer_id\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'expression has type "PeerId", variable has type "int"' in result.stdout
