"""``listen`` against one peer opening many echo streams: the per-peer share."""

from __future__ import annotations

import subprocess

from test_cli import CMD, ENV, Listener


def run_echo(addr: str, streams: int) -> subprocess.CompletedProcess:
    return subprocess.run(CMD + ["echo", addr, "--streams", str(streams), "--bytes", "64K",
                                 "--timeout", "20"],
                          capture_output=True, text=True, env=ENV, timeout=40)


def stop(listener: Listener) -> str:
    """Stop the listener; return what it logged."""
    listener.proc.terminate()
    listener.proc.wait(10)
    err = listener.proc.stderr.read()
    listener.stop()
    return err


def test_streams_beyond_the_share_are_reset_with_a_warning():
    listener = Listener()
    try:
        done = run_echo(listener.addr, 400)
    finally:
        err = stop(listener)
    assert done.returncode != 0 and "reset" in done.stdout + done.stderr
    assert "WARNING" in err and "share is full" in err, err
    assert err.count("share is full") == 1, err  # rate-limited


def test_listen_max_streams_per_peer_lets_400_streams_through():
    listener = Listener("--max-streams-per-peer", "400")
    try:
        done = run_echo(listener.addr, 400)
    finally:
        stop(listener)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK echo streams=400")


def test_listen_help_documents_max_streams_per_peer():
    out = subprocess.run(CMD + ["listen", "--help"], capture_output=True, text=True,
                         env=ENV, timeout=20).stdout
    assert "--max-streams-per-peer N" in out
