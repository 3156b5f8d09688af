"""How the command line reads addresses (issue #11, item 2): multiaddrs without /p2p/,
bare peer ids, malformed addresses, listen addresses already in use."""

from __future__ import annotations

import signal

import pytest

from libp2p_stream_sync import Keypair, Node
from libp2p_stream_sync.cli import main


@pytest.fixture(scope="module")
def server():
    with Node(listen=["/ip4/127.0.0.1/tcp/0"]) as node:
        yield node


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_address_without_p2p_says_which_peer_answered(server, capsys):
    status, out, err = run(capsys, "ping", str(server.listen_addrs[0]), "--timeout", "5")
    assert status == 0 and out.startswith("OK ping "), (out, err)
    assert f"peer {server.peer_id}" in err and "names no peer" in err
    addr = f"{server.listen_addrs[0]}/p2p/{server.peer_id}"  # authenticated: no note
    status, out, err = run(capsys, "ping", addr, "--timeout", "5")
    assert status == 0 and out.startswith("OK ping ") and err == "", (out, err)


def test_infinite_timeout_means_no_deadline(server, capsys):
    addr = f"{server.listen_addrs[0]}/p2p/{server.peer_id}"
    for command in ("ping", "id"):
        status, out, err = run(capsys, command, addr, "--timeout", "inf")
        assert status == 0 and out.startswith(f"OK {command} "), (out, err)


def test_bare_peer_id_fails_with_no_known_address(capsys):
    peer = str(Keypair.generate().peer_id)
    status, out, _ = run(capsys, "ping", peer, "--timeout", "2")
    assert status == 1 and out == f"FAIL no known address for peer {peer}\n"


@pytest.mark.parametrize("addr", ["/ip4/1.2.3/tcp/1", "/ip4/127.0.0.1/tcp/99999", "garbage"])
def test_malformed_address_fails_naming_it_once(addr, capsys):
    status, out, _ = run(capsys, "ping", addr, "--timeout", "2")
    assert status == 1 and out.startswith("FAIL ") and out.count(addr) == 1, out


def test_listen_on_an_address_in_use_names_it(server, capsys, monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's handlers
    taken = str(server.listen_addrs[0])
    status, out, _ = run(capsys, "listen", "--listen", taken)
    assert status == 1 and out.startswith("FAIL ") and taken in out and "in use" in out
