"""AutoNAT v1 messages and the IP scope: pure code, checked byte for byte."""

from __future__ import annotations

import ast
import ipaddress
import pathlib
from types import SimpleNamespace

import pytest
from multiaddr import Multiaddr

from libp2p_stream_sync import Keypair, Limits
from libp2p_stream_sync.ipscope import IpScope, ip_of, with_ip
from libp2p_stream_sync.protocols.autonat import messages, targets
from libp2p_stream_sync.protocols.autonat.client import (AutoNATClient, Observation,
                                                         candidate_addrs, verdict)
from libp2p_stream_sync.protocols.autonat.messages import (AutoNATMessageError, Status,
                                                           decode_request,
                                                           decode_response, encode_dial,
                                                           encode_response, frame_header)
from libp2p_stream_sync.protocols.autonat.server import RateLimiter, dial_targets
from libp2p_stream_sync.protocols.autonat.v2_server import AutoNATv2Server
from libp2p_stream_sync.transport import Transports, websocket
from libp2p_stream_sync.transport.quic import QuicTransport
from libp2p_stream_sync.transport.tcp import TcpTransport

#: A node's transport table as node.py builds it (what a server can dial back).
TRANSPORTS = Transports(TcpTransport())
TRANSPORTS.register(websocket.WebSocketTransport())
TRANSPORTS.register(QuicTransport(None))

PEER = Keypair.generate().peer_id


def test_dial_encodes_as_the_spec_schema_says():
    # Message{type: DIAL(0), dial: Dial{peer: PeerInfo{id: 01, addrs: [02]}}}
    body = bytes.fromhex("0800" "1208" "0a06" "0a0101" "120102")
    assert encode_dial(b"\x01", [b"\x02"]) == bytes([len(body)]) + body
    request = decode_request(body)
    assert request.peer_id == b"\x01" and request.addrs == [b"\x02"]


def test_response_round_trips_and_keeps_unknown_status_numbers():
    raw = encode_response(Status.E_DIAL_ERROR, "dial failed")
    assert raw[1:3] == b"\x08\x01"  # type DIAL_RESPONSE
    response = decode_response(raw[1:])
    assert response.status is Status.E_DIAL_ERROR and response.text == "dial failed"
    ok = decode_response(encode_response(Status.OK, addr=b"\x04\x7f\x00\x00\x01")[1:])
    assert ok.status is Status.OK and ok.addr == b"\x04\x7f\x00\x00\x01"
    odd = bytes.fromhex("0801" "1a02" "082a")  # status 42
    assert decode_response(odd).status == 42


@pytest.mark.parametrize("body", [
    b"\xff\xff",                       # truncated varint
    bytes.fromhex("0801"),             # a DIAL_RESPONSE where a DIAL is expected
    bytes.fromhex("0800"),             # DIAL without its dial field
    bytes.fromhex("08001200"),         # DIAL without peer info
    bytes.fromhex("0800" "1203" "0a01"),  # peer info runs past the end
    b"\x00" * 5000,                    # oversized
])
def test_malformed_requests_raise_message_errors(body):
    with pytest.raises(AutoNATMessageError):
        decode_request(body)


def test_response_needs_a_status():
    with pytest.raises(AutoNATMessageError):
        decode_response(bytes.fromhex("0801" "1a00"))


def test_frame_header_bounds_the_announced_length():
    assert frame_header(b"") is None and frame_header(b"\x80") is None
    assert frame_header(b"\x05abc") == (1, 5)
    assert frame_header(b"\x80\x20") == (2, 4096)
    with pytest.raises(AutoNATMessageError):
        frame_header(b"\x81\x20")  # 4097
    with pytest.raises(AutoNATMessageError):
        frame_header(b"\x80\x80\x80")  # a prefix that never ends


def test_messages_module_is_pure():
    tree = ast.parse(pathlib.Path(messages.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}
    assert not imported & {"socket", "selectors", "threading", "time", "asyncio"}


def test_ip_scope_treats_special_ranges_as_private_unless_told():
    default = IpScope()
    assert default.is_public("8.8.8.8") and default.is_public("2606:4700::1")
    for ip in ("10.1.2.3", "127.0.0.1", "198.18.0.5", "100.64.0.1", "fe80::1", "::1",
               "192.168.1.1", "not an ip"):
        assert not default.is_public(ip), ip
    lab = IpScope(["198.18.0.0/15"])
    assert lab.is_public("198.19.255.1") and not lab.is_public("10.1.2.3")
    with pytest.raises(ValueError):
        IpScope(["300.0.0.0/8"])


def test_with_ip_and_ip_of():
    ma = Multiaddr("/ip4/10.0.0.1/tcp/4001/ws")
    assert ip_of(ma) == "10.0.0.1" and ip_of(Multiaddr("/dns4/example.com/tcp/1")) is None
    assert str(with_ip(ma, "198.18.0.2")) == "/ip4/198.18.0.2/tcp/4001/ws"
    assert str(with_ip(ma, "2001:db8::1")) == "/ip6/2001:db8::1/tcp/4001/ws"


def test_candidates_add_the_observed_ip_to_listen_ports():
    scope = IpScope(["198.18.0.0/15"])
    listen = [Multiaddr("/ip4/10.0.1.2/tcp/4001"), Multiaddr("/ip6/::1/tcp/4002")]
    found = candidate_addrs(listen, ["198.18.0.2", "10.9.9.9"], scope)
    assert [str(ma) for ma in found] == ["/ip4/198.18.0.2/tcp/4001"]


def test_server_dials_only_the_observed_ip_and_never_a_relay():
    observed = ipaddress.ip_address("198.18.0.2")
    other = Keypair.generate().peer_id
    raw = [Multiaddr(text).to_bytes() for text in (
        "/ip4/198.18.0.2/tcp/1", "/ip4/198.18.0.3/tcp/1", f"/ip4/198.18.0.2/tcp/2/p2p/{PEER}",
        f"/ip4/198.18.0.2/tcp/3/p2p/{other}", "/ip4/198.18.0.2/tcp/1",
        f"/ip4/198.18.0.2/tcp/4/p2p/{other}/p2p-circuit", "/dns4/x/tcp/5")] + [b"\xff"]
    assert [str(ma) for ma in dial_targets(raw, observed, PEER, TRANSPORTS)] == [
        "/ip4/198.18.0.2/tcp/1", "/ip4/198.18.0.2/tcp/2"]
    many = [Multiaddr(f"/ip4/198.18.0.2/tcp/{port}").to_bytes() for port in range(1, 40)]
    assert len(dial_targets(many, observed, PEER, TRANSPORTS)) == 16


def test_rate_limiter_counts_per_peer_and_in_all_over_a_window():
    now = [0.0]
    limiter = RateLimiter(per_peer=2, total=3, window=60.0, clock=lambda: now[0])
    a, b = PEER, Keypair.generate().peer_id
    assert limiter.admit(a) and limiter.admit(a) and not limiter.admit(a)
    assert limiter.admit(b) and not limiter.admit(b)  # the node-wide bound
    now[0] = 59.0
    assert not limiter.admit(b)
    now[0] = 60.5  # the first three have expired
    assert limiter.admit(a) and limiter.admit(b)


def _obs(*outcomes):
    return [Observation(Keypair.generate().peer_id, outcome) for outcome in outcomes]


def test_verdict_needs_confirmations():
    assert verdict(_obs("reachable", "reachable", "reachable"), 3) == "public"
    assert verdict(_obs("reachable", "unreachable", "reachable"), 2) == "public"
    assert verdict(_obs("reachable", "reachable"), 3) == "unknown"
    assert verdict(_obs("unreachable", "unreachable", "unreachable"), 3) == "private"
    assert verdict(_obs("unreachable", "unreachable", "unreachable", "reachable"), 3) \
        == "unknown"
    assert verdict(_obs("refused", "failed", "refused"), 1) == "unknown"


def test_a_dial_without_its_type_field_is_a_dial():
    # proto2 reads an absent enum as its default, DIAL (0), as go-libp2p does.
    request = decode_request(bytes.fromhex("1208" "0a06" "0a0101" "120102"))
    assert request.peer_id == b"\x01" and request.addrs == [b"\x02"]
    with pytest.raises(AutoNATMessageError):
        decode_response(bytes.fromhex("1a02" "0800"))  # a response must say so


class _Host:
    """An AutoNAT client's host whose peers observed us at the given IPs."""

    peer_id = PEER

    def __init__(self, listen, observed) -> None:
        self.listen_addrs = [Multiaddr(a) for a in listen]
        self._peers = {Keypair.generate().peer_id: ip for ip in observed}

    def connected_peers(self):
        return list(self._peers)

    def direct_listen_addrs(self):
        return self.listen_addrs

    def identify_info(self, peer):
        return SimpleNamespace(observed_addr=Multiaddr(f"/ip4/{self._peers[peer]}/tcp/9"),
                               protocols=[])


def test_an_observed_ip_needs_two_peers_unless_it_is_ours():
    scope = IpScope(["198.18.0.0/15", "127.0.0.0/8"])
    host = _Host(["/ip4/10.0.1.2/tcp/4001"], ["198.18.0.2", "198.18.0.3", "198.18.0.3"])
    client = AutoNATClient(host, scope)
    assert [str(ma) for ma in client.candidates()] == ["/ip4/198.18.0.3/tcp/4001"]
    # A wildcard listener is reachable at this host's own IPs: one report suffices.
    host = _Host(["/ip4/0.0.0.0/tcp/4001"], ["127.0.0.1", "198.18.0.2"])
    assert [str(ma) for ma in AutoNATClient(host, scope).candidates()] == \
        ["/ip4/127.0.0.1/tcp/4001"]


def test_server_skips_addresses_whose_transport_it_lacks(monkeypatch):
    observed = ipaddress.ip_address("198.18.0.2")
    raw = [Multiaddr(a).to_bytes() for a in ("/ip4/198.18.0.2/tcp/1/ws",
                                             "/ip4/198.18.0.2/tcp/2")]
    assert len(dial_targets(raw, observed, PEER, TRANSPORTS)) == 2

    def no_wsproto():
        raise ImportError("pip install 'libp2p_stream_sync[ws]'")
    monkeypatch.setattr(websocket, "require_wsproto", no_wsproto)
    assert [str(ma) for ma in dial_targets(raw, observed, PEER, TRANSPORTS)] == [
        "/ip4/198.18.0.2/tcp/2"]


def test_server_dials_back_quic_addresses_the_node_can_dial():
    observed = ipaddress.ip_address("198.18.0.2")
    raw = [Multiaddr(a).to_bytes() for a in ("/ip4/198.18.0.2/udp/1/quic-v1",
                                             "/ip4/198.18.0.2/tcp/2")]
    assert [str(ma) for ma in dial_targets(raw, observed, PEER, TRANSPORTS)] == [
        "/ip4/198.18.0.2/udp/1/quic-v1", "/ip4/198.18.0.2/tcp/2"]
    tcp_only = Transports(TcpTransport())
    assert [str(ma) for ma in dial_targets(raw, observed, PEER, tcp_only)] == [
        "/ip4/198.18.0.2/tcp/2"]


def test_servers_skip_ips_we_have_no_route_to(monkeypatch):
    assert targets.has_route("127.0.0.1")
    monkeypatch.setattr(targets, "has_route", lambda ip: ip != "198.18.0.3")
    raw = [Multiaddr(a).to_bytes() for a in ("/ip4/198.18.0.3/tcp/1", "/ip4/198.18.0.2/tcp/1")]
    server = AutoNATv2Server(SimpleNamespace(limits=Limits(), transports=TRANSPORTS),
                             IpScope(["198.18.0.0/15"]),
                             RateLimiter(1, 1, 60.0))
    index, chosen = server.choose(raw, PEER)
    assert (index, str(chosen)) == (1, "/ip4/198.18.0.2/tcp/1")
    assert dial_targets(raw, ipaddress.ip_address("198.18.0.3"), PEER, TRANSPORTS) == []
