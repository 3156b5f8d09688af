"""The namespace lab itself: its NATs map as advertised, and it leaves nothing behind."""

from __future__ import annotations

import subprocess

import pytest

import netlab
from netlab import NetLab, lab_or_skip

# The first test's setup may apt-get install nftables (docs/NAT-TESTS.md).
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def lab():
    lab = lab_or_skip(nats=("eim", "symmetric"), public_hosts=1)
    yield lab
    lab.close()


def _mapped_ports(lab, index: int, source_port: int) -> list[str]:
    """Connect from private host ``index``, local port ``source_port``, to two
    observer ports in the internet; the ``ip:port`` each observer saw."""
    observer = lab.spawn(lab.internet)
    ports = observer.call("tcp_observer", ip=lab.internet.ip, count=2)
    client = lab.spawn(lab.private[index])
    targets = [[lab.internet.ip, port] for port in ports]
    assert client.call("tcp_connect", targets=targets, source_port=source_port) \
        == ["ok", "ok"]
    seen = observer.call("observed", min_each=1)
    assert all(len(slot) == 1 for slot in seen), seen
    return [slot[0] for slot in seen]


def test_eim_nat_keeps_one_mapping_for_every_destination(lab):
    first, second = _mapped_ports(lab, 0, 40001)
    assert first == second == f"{lab.nat[0].ip}:40001"


def test_symmetric_nat_maps_each_destination_apart(lab):
    first, second = _mapped_ports(lab, 1, 40002)
    assert first.split(":")[0] == second.split(":")[0] == lab.nat[1].ip
    assert first != second  # fully random: equal ports would be a 1 in 64k fluke


def test_inbound_connections_to_a_nat_are_refused_and_private_hosts_unroutable(lab):
    observer = lab.spawn(lab.private[0])
    (port,) = observer.call("tcp_observer", ip="0.0.0.0", count=1)
    outside = lab.spawn(lab.public[0])
    results = outside.call("tcp_connect", timeout_s=2, targets=[
        [lab.nat[0].ip, port], [lab.private[0].ip, port]])
    assert results[0].startswith("ConnectionRefusedError"), results
    assert not results[1] == "ok", results
    assert observer.call("observed") == [[]]


def test_a_failed_block_leaves_no_namespace_behind():
    lab = lab_or_skip(nats=("eim",), public_hosts=0)
    names = lab.namespaces
    with pytest.raises(RuntimeError):
        with lab:
            lab.spawn(lab.private[0]).call("start", listen=["/ip4/1.2.3.4/tcp/0"])
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True,
                             text=True).stdout
    assert names and not any(name in listing for name in names)


def test_unknown_nat_kinds_are_refused():
    with pytest.raises(ValueError):
        NetLab(nats=("full-cone",))


def test_without_root_the_lab_skips_saying_why(monkeypatch):
    monkeypatch.setattr(netlab.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        lab_or_skip()
