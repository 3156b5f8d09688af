"""Issue #11: node.close() releases a wait_identified blocked on a peer that never
identifies, promptly and with an error."""

from __future__ import annotations

import threading
import time

import pytest

from libp2p_stream_sync import Keypair, OpenStreamError


def test_close_releases_wait_identified(make_node):
    node = make_node()
    stranger = Keypair.generate().peer_id  # never connects, never identifies
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            node.wait_identified(stranger, timeout=20)
            outcome.append(None)
        except BaseException as exc:  # checked below
            outcome.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.2)  # let it block
    start = time.monotonic()
    node.close()
    waiter.join(5)
    assert not waiter.is_alive(), "wait_identified still blocked after close()"
    assert time.monotonic() - start < 2.0
    assert isinstance(outcome[0], OpenStreamError) and outcome[0].kind == "closed", outcome


def test_wait_identified_on_a_closed_node_raises_at_once(make_node):
    node = make_node()
    node.close()
    start = time.monotonic()
    with pytest.raises(OpenStreamError, match="closed"):
        node.wait_identified(Keypair.generate().peer_id, timeout=10)
    assert time.monotonic() - start < 1.0
