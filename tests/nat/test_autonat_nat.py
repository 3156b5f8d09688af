"""AutoNAT v1 and v2 across real NATs (network namespaces, tests/nat/netlab.py): a
public node is found reachable, a node behind either kind of NAT is found private."""

from __future__ import annotations

import pytest

from netlab import NetLab, lab_or_skip

# The first test's setup may apt-get install nftables (docs/NAT-TESTS.md).
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def lab():
    lab = lab_or_skip(nats=("eim", "symmetric"), public_hosts=1)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def servers(lab):
    """Three AutoNAT servers in the internet namespace (one process)."""
    proc = lab.spawn(lab.internet)
    return [proc.start_node(listen=[f"/ip4/{lab.internet.ip}/tcp/0"],
                            enable_autonat_server=True,
                            public_networks=[NetLab.PUBLIC_NETWORK]) for _ in range(3)]


def _probe_from(lab, host, servers, version) -> dict:
    node = lab.spawn(host).start_node(listen=[f"/ip4/{host.ip}/tcp/0"],
                                      public_networks=[NetLab.PUBLIC_NETWORK])
    for server in servers:
        node.dial(server.p2p_addr())
    result = node.probe(timeout=20, version=version)
    result["node"] = node
    return result


@pytest.mark.parametrize("version", [1, 2])
def test_a_public_node_is_found_reachable(lab, servers, version):
    result = _probe_from(lab, lab.public[0], servers, version)
    assert result["status"] == "public", result
    assert result["reachable_addrs"] == [result["node"].addrs[0]]
    assert [o["outcome"] for o in result["observations"]] == ["reachable"] * 3


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("index", [0, 1], ids=["eim-nat", "symmetric-nat"])
def test_a_node_behind_a_nat_is_found_private(lab, servers, index, version):
    result = _probe_from(lab, lab.private[index], servers, version)
    assert result["status"] == "private", result
    assert [o["outcome"] for o in result["observations"]] == ["unreachable"] * 3
    # It asked about the router's address (seen through identify) with its own port.
    port = result["node"].addrs[0].rsplit("/", 1)[1]
    assert f"/ip4/{lab.nat[index].ip}/tcp/{port}" in result["asked"], result
