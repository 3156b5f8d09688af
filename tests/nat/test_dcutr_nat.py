"""Circuit relay and DCUtR hole punching across real NATs (tests/nat/netlab.py).

A relay runs on the public host; two nodes sit behind NAT routers, one holding a slot
on the relay, the other dialing it through the relay. Behind two endpoint-independent
NATs ("eim") the relayed connection is upgraded to a direct one by a TCP simultaneous
open; with a symmetric NAT on one side every round fails and the relay stays in use.
A perf run (1 MiB each way) crosses a relay whose circuits allow 4 MiB a way.
"""

from __future__ import annotations

import pytest

from netlab import NetLab, lab_or_skip

# The first test's setup may apt-get install nftables (docs/NAT-TESTS.md).
pytestmark = pytest.mark.timeout(180)

PUBLIC = [NetLab.PUBLIC_NETWORK]


@pytest.fixture(scope="module")
def lab():
    lab = lab_or_skip(nats=("eim", "eim", "symmetric"), public_hosts=1,
                      drop_unsolicited=True)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def relay(lab):
    host = lab.public[0]
    return lab.spawn(host).start_node(listen=[f"/ip4/{host.ip}/tcp/0"],
                                      relay_service={}, public_networks=PUBLIC)


def _node(lab, index: int, **kwargs):
    host = lab.private[index]
    return lab.spawn(host).start_node(listen=[f"/ip4/{host.ip}/tcp/0"],
                                      public_networks=PUBLIC, **kwargs)


def _explain(*nodes) -> str:
    """Hole-punch counts and the end of each node's log, for a failure message."""
    return "\n".join(f"{n.proc.host.name}: {n.call('hole_punches')}\n"
                     f"{n.proc.stderr_tail(3000)}" for n in nodes)


def _relayed_pair(lab, relay, listener: int, dialer: int, dial_window: float = 5.0,
                  **kwargs):
    """(b, a): b behind NAT ``listener`` holds a slot and serves echo; a behind NAT
    ``dialer`` dials b through the relay."""
    b = _node(lab, listener, **kwargs)
    a = _node(lab, dialer, **kwargs)
    for node in (a, b):
        node.call("log_level", logger="libp2p_stream_sync.protocols.dcutr", level="DEBUG")
        node.call("hole_punches", dial_window=dial_window)
    (circuit,) = b.call("reserve", relay=relay.p2p_addr())
    b.call("serve_echo")
    a.dial(f"{circuit}/p2p/{b.peer_id}")
    return b, a


def test_relayed_echo_between_two_nated_nodes(lab, relay):
    b, a = _relayed_pair(lab, relay, 0, 1, limits={"max_hole_punches": 0})
    result = a.call("echo", peer=b.peer_id, size=64 * 1024)
    assert result["ok"] and result["relayed"], result
    with pytest.raises(Exception, match="relayed"):
        a.call("echo", peer=b.peer_id, direct=True)


def test_relayed_perf_between_two_nated_nodes(lab):
    """1 MiB up and 1 MiB down through a relay whose circuits may carry 4 MiB a way."""
    host = lab.public[0]
    big_relay = lab.spawn(host).start_node(
        listen=[f"/ip4/{host.ip}/tcp/0"], public_networks=PUBLIC,
        relay_service={"circuit_data": 4 << 20})
    b, a = _relayed_pair(lab, big_relay, 0, 1, limits={"max_hole_punches": 0},
                         enable_perf=True)
    result = a.call("perf", peer=b.peer_id, upload=1 << 20, download=1 << 20)
    assert result == {"upload_bytes": 1 << 20, "download_bytes": 1 << 20,
                      "relayed": True}, result


def test_hole_punch_between_two_eim_nats(lab, relay):
    b, a = _relayed_pair(lab, relay, 0, 1)
    assert a.call("wait_direct", peer=b.peer_id, timeout_s=15), _explain(a, b)
    assert b.call("wait_direct", peer=a.peer_id, timeout_s=5), _explain(a, b)
    (direct,) = [c for c in a.call("connections", peer=b.peer_id) if not c["relayed"]]
    assert direct["remote_addr"][0] == lab.nat[0].ip  # b's router, not the relay
    # a stream opened now goes direct
    result = a.call("echo", peer=b.peer_id, size=64 * 1024, direct=True)
    assert result["ok"] and not result["relayed"], result
    assert result["remote_addr"][0] == lab.nat[0].ip
    counts = b.call("hole_punches")
    assert counts.get("punched") == 1 and counts["active"] == 0, counts
    assert a.call("hole_punches").get("punched") == 1


def test_a_symmetric_nat_falls_back_to_the_relay(lab, relay):
    b, a = _relayed_pair(lab, relay, 0, 2, dial_window=1.0)
    counts = b.call("hole_punches")
    for _ in range(40):  # three rounds of 1 s, and identify first
        if counts.get("failed") == 1:
            break
        assert not b.call("wait_direct", peer=a.peer_id, timeout_s=0.25), _explain(a, b)
        counts = b.call("hole_punches")
    assert counts.get("failed") == 1 and counts["active"] == 0, _explain(a, b)
    assert a.call("hole_punches").get("failed") == 1
    assert not [c for c in a.call("connections", peer=b.peer_id) if not c["relayed"]]
    result = a.call("echo", peer=b.peer_id, size=16 * 1024)
    assert result["ok"] and result["relayed"], result
