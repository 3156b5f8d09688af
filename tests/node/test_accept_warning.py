"""Issue #11: streams dropped by a full accept queue are logged at WARNING, at most
one line per protocol every few seconds, with the running count."""

from __future__ import annotations

import logging

from conftest import p2p_addr, wait_until


def test_full_accept_queue_warns_once_with_the_count(make_node, caplog):
    server = make_node()
    client = make_node(listen=[])
    incoming = server.new_control().accept("/full/1.0.0", capacity=1)
    control = client.new_control()
    caplog.set_level(logging.WARNING)
    streams = [control.open_stream(p2p_addr(server), "/full/1.0.0", timeout=5)
               for _ in range(6)]
    assert wait_until(lambda: incoming.dropped == 5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "/full/1.0.0" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "1 dropped so far" in warnings[0].getMessage()
    for stream in streams:
        stream.reset()
