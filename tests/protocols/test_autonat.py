"""AutoNAT v1 between real nodes on loopback: verdicts, and the server's refusals.

Loopback is special-use, so the nodes count ``127.0.0.0/8`` as public
(``public_networks``); one test checks that without it the server refuses.
"""

from __future__ import annotations

import threading
import time

import pytest
from multiaddr import Multiaddr

from libp2p_stream_sync import Limits, Node
from libp2p_stream_sync.protocols.autonat import PROTOCOL, server as autonat_server
from libp2p_stream_sync.protocols.autonat import targets as autonat_targets
from libp2p_stream_sync.protocols.autonat.client import Observation, verdict
from libp2p_stream_sync.protocols.autonat.messages import (Status, decode_response,
                                                           encode_dial, encode_response,
                                                           frame)
from libp2p_stream_sync.protocols.autonat.streams import read_message

import protocol_helpers
from protocol_helpers import eventually, p2p_addr

nodes = protocol_helpers.nodes  # fixture
LOOPBACK_PUBLIC = ["127.0.0.0/8"]


def _server(nodes, **kwargs) -> Node:
    kwargs.setdefault("public_networks", LOOPBACK_PUBLIC)
    return nodes(enable_autonat_server=True, **kwargs)


def _connect(client: Node, *servers: Node) -> None:
    for server in servers:
        client.dial(p2p_addr(server), timeout=5)
        client.wait_identified(server.peer_id, timeout=5)


def _ask(client: Node, server: Node, payload: bytes):
    """Send raw bytes on an AutoNAT stream; the decoded response."""
    stream = client.new_control().open_stream(p2p_addr(server), PROTOCOL, timeout=5)
    stream.write(payload)
    response = decode_response(read_message(stream, time.monotonic() + 10))
    stream.close()
    return response


def _request(client: Node, *addrs: str, peer_id: bytes | None = None) -> bytes:
    return encode_dial(peer_id if peer_id is not None else client.peer_id.to_bytes(),
                       [Multiaddr(a).to_bytes() for a in addrs])


def test_three_servers_find_a_listening_node_public(nodes):
    servers = [_server(nodes) for _ in range(3)]
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    assert client.reachability().status == "unknown"
    _connect(client, *servers)
    result = client.probe_reachability(timeout=10)
    assert result.status == "public", result
    assert [str(a) for a in result.reachable_addrs] == [str(client.listen_addrs[0])]
    assert {o.server for o in result.observations} == {s.peer_id for s in servers}
    assert client.reachability() == result


def test_an_open_connection_is_no_proof_the_node_can_be_dialed(nodes):
    servers = [_server(nodes) for _ in range(3)]
    # Connected to every server, but it closes every inbound connection (a firewall).
    client = nodes(public_networks=LOOPBACK_PUBLIC,
                   limits=Limits(max_inbound_connections=0))
    _connect(client, *servers)
    result = client.probe_reachability(timeout=10)
    assert result.status == "private", result
    assert {o.outcome for o in result.observations} == {"unreachable"}
    assert [str(a) for a in result.asked] == [str(client.listen_addrs[0])]


def test_too_few_answers_give_no_verdict(nodes):
    servers = [_server(nodes) for _ in range(2)]
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    _connect(client, *servers)
    assert client.probe_reachability(timeout=10).status == "unknown"
    assert client.probe_reachability(timeout=10, confirmations=2).status == "public"
    with pytest.raises(ValueError):
        client.probe_reachability(confirmations=0)


def test_the_server_is_off_by_default(nodes):
    plain = nodes()
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    result = client.probe_reachability([p2p_addr(plain)], timeout=5, confirmations=1)
    assert result.status == "unknown"
    assert [o.outcome for o in result.observations] == ["failed"]
    assert "does not serve AutoNAT" in result.observations[0].detail
    _connect(client, plain)
    assert client.probe_reachability(timeout=5).observations == ()  # no server known


def test_observed_address_makes_a_wildcard_listener_a_candidate(nodes):
    server = _server(nodes)
    client = nodes(listen=["/ip4/0.0.0.0/tcp/0"], public_networks=LOOPBACK_PUBLIC)
    _connect(client, server)
    port = client.listen_addrs[0].value_for_protocol(6)
    result = client.probe_reachability(timeout=10, confirmations=1)
    assert [str(a) for a in result.asked] == [f"/ip4/127.0.0.1/tcp/{port}"]
    assert result.status == "public", result


def test_dial_back_to_another_ip_is_refused(nodes):
    server = _server(nodes)
    # Listens on 127.0.0.2 but connects from 127.0.0.1: that is what the server sees.
    client = nodes(listen=["/ip4/127.0.0.2/tcp/0"])
    _connect(client, server)
    response = _ask(client, server, _request(client, str(client.listen_addrs[0])))
    assert response.status is Status.E_DIAL_REFUSED
    assert "observed IP" in response.text
    time.sleep(0.2)
    assert len(client.connections(server.peer_id)) == 1  # nobody dialed 127.0.0.2


def test_a_private_observed_ip_is_refused(nodes):
    server = nodes(enable_autonat_server=True)  # loopback is not public for it
    client = nodes()
    response = _ask(client, server, _request(client, str(client.listen_addrs[0])))
    assert response.status is Status.E_DIAL_REFUSED
    assert "not public" in response.text


def test_a_request_for_another_peer_is_a_bad_request(nodes):
    server = _server(nodes)
    client, other = nodes(), nodes()
    request = _request(client, str(other.listen_addrs[0]), peer_id=other.peer_id.to_bytes())
    assert _ask(client, server, request).status is Status.E_BAD_REQUEST


def test_rate_limits_per_peer_and_for_the_node(nodes):
    server = _server(nodes, limits=Limits(max_autonat_dialbacks_per_peer=2,
                                          max_autonat_dialbacks=3))
    a, b = nodes(), nodes()
    statuses = [_ask(a, server, _request(a, str(a.listen_addrs[0]))).status
                for _ in range(3)]
    assert statuses == [Status.OK, Status.OK, Status.E_DIAL_REFUSED]
    statuses = [_ask(b, server, _request(b, str(b.listen_addrs[0]))).status
                for _ in range(2)]
    assert statuses == [Status.OK, Status.E_DIAL_REFUSED]  # 3 in all this minute
    refused = _ask(b, server, _request(b, str(b.listen_addrs[0])))
    assert refused.text == "too many dial requests"


def test_a_request_without_a_usable_address_costs_no_rate(nodes):
    server = _server(nodes, limits=Limits(max_autonat_dialbacks_per_peer=1))
    client = nodes()
    assert _ask(client, server, _request(client, "/dns4/x/tcp/1")).status \
        is Status.E_DIAL_REFUSED
    assert _ask(client, server, _request(client, str(client.listen_addrs[0]))).status \
        is Status.OK


@pytest.mark.parametrize("payload", [
    frame(b"\xff\xff\xff"),            # framed, but not protobuf
    frame(bytes.fromhex("0801")),      # a response where a request belongs
])
def test_a_malformed_request_gets_bad_request_and_the_connection_lives(nodes, payload):
    server = _server(nodes)
    client = nodes()
    assert _ask(client, server, payload).status is Status.E_BAD_REQUEST
    assert len(client.ping(server.peer_id, timeout=5)) == 1


def test_an_oversized_or_silent_request_resets_only_its_stream(nodes, monkeypatch):
    monkeypatch.setattr(autonat_server, "REQUEST_TIMEOUT", 0.5)
    server = _server(nodes)
    client = nodes()
    for payload in (b"\x81\x20" + b"\x00" * 100, b"\x05ab"):  # 4097 bytes; cut short
        stream = client.new_control().open_stream(p2p_addr(server), PROTOCOL, timeout=5)
        stream.write(payload)
        stream.settimeout(5)
        with pytest.raises(ConnectionResetError):
            stream.read()
    assert len(client.ping(server.peer_id, timeout=5)) == 1
    eventually(lambda: server.counts()["inbound_streams"] == 0)


def test_one_server_named_three_times_is_one_confirmation(nodes):
    server = _server(nodes)
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    _connect(client, server)
    for version in (1, 2):
        result = client.probe_reachability([server.peer_id, p2p_addr(server),
                                            str(server.peer_id)], timeout=10,
                                           confirmations=3, version=version)
        assert result.status == "unknown", result
        assert [o.outcome for o in result.observations] == ["reachable"]
    assert verdict([Observation(server.peer_id, "reachable")] * 3, 3) == "unknown"


def test_an_ok_for_an_address_we_did_not_ask_about_records_none(nodes):
    liar = nodes()
    incoming = liar.new_control().accept(PROTOCOL)

    def answer() -> None:
        for _, stream in incoming:
            read_message(stream, time.monotonic() + 5)
            stream.write(encode_response(Status.OK, addr=Multiaddr(
                "/ip4/198.51.100.7/tcp/1").to_bytes()))
            stream.close()
            return
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    result = client.probe_reachability([p2p_addr(liar)], timeout=10, confirmations=1)
    thread.join(5)
    assert [(o.outcome, o.addr) for o in result.observations] == [("reachable", None)]
    assert result.reachable_addrs == ()


def test_a_dial_back_that_completes_after_its_timeout_is_closed(nodes, monkeypatch):
    monkeypatch.setattr(autonat_targets, "LATE_DIAL_GRACE", 0.1)
    server = _server(nodes)
    dial = server.dial_new_connection

    def late(addr, timeout):
        dial(addr, timeout)  # connected, but the worker has given up by now
        raise TimeoutError("dialing timed out")
    monkeypatch.setattr(server, "dial_new_connection", late)
    client = nodes()
    response = _ask(client, server, _request(client, str(client.listen_addrs[0])))
    assert response.status is Status.E_DIAL_ERROR
    eventually(lambda: len(server.connections(client.peer_id)) == 1)
    assert len(client.ping(server.peer_id, timeout=5)) == 1
