"""AutoNAT v2: messages byte for byte, and real nodes on loopback (verdicts, the nonce
check, amplification-attack prevention, refusals, the shared rate limit)."""

from __future__ import annotations

import threading
import time

import pytest
from multiaddr import Multiaddr

from libp2p_stream_sync import Keypair, Limits, Node
from libp2p_stream_sync.protocols.autonat import v2_client, v2_server
from libp2p_stream_sync.protocols.autonat.messages import AutoNATMessageError
from libp2p_stream_sync.protocols.autonat.streams import read_message
from libp2p_stream_sync.protocols.autonat.v2_client import dial_back_matches
from libp2p_stream_sync.protocols.autonat.v2_messages import (
    DIAL_BACK_PROTOCOL, DIAL_REQUEST_PROTOCOL, MAX_MESSAGE_SIZE, DialDataRequest, DialDataResponse,
    DialRequest, DialResponse, DialStatus, ResponseStatus, decode_dial_back,
    decode_message, encode_dial_back, encode_dial_data_request, encode_dial_data_response,
    encode_dial_request, encode_dial_response)
from libp2p_stream_sync.transport import websocket

import protocol_helpers
from protocol_helpers import p2p_addr

nodes = protocol_helpers.nodes  # fixture
LOOPBACK_PUBLIC = ["127.0.0.0/8"]
PEER = Keypair.generate().peer_id


# -- messages ------------------------------------------------------------------------
def test_dial_request_encodes_as_the_spec_schema_says():
    # Message{dialRequest(1): DialRequest{addrs(1): [02], nonce(2, fixed64): 1}}
    body = bytes.fromhex("0a0c" "0a0102" "11" "0100000000000000")
    assert encode_dial_request([b"\x02"], 1) == bytes([len(body)]) + body
    assert decode_message(body) == DialRequest([b"\x02"], 1)


def test_v2_messages_round_trip_and_keep_unknown_numbers():
    def back(raw: bytes):
        return decode_message(raw[1:] if raw[0] < 0x80 else raw[2:])
    assert back(encode_dial_data_request(2, 30_000)) == DialDataRequest(2, 30_000)
    assert back(encode_dial_data_response(b"x" * 10)) == DialDataResponse(b"x" * 10)
    response = back(encode_dial_response(ResponseStatus.OK, 1, DialStatus.E_DIAL_ERROR))
    assert response == DialResponse(ResponseStatus.OK, 1, DialStatus.E_DIAL_ERROR)
    assert decode_message(bytes.fromhex("1204" "082a" "1800")) == \
        DialResponse(42, 0, DialStatus.UNUSED)  # proto3 zero values, unknown status
    assert decode_dial_back(encode_dial_back(2 ** 64 - 1)[1:]) == 2 ** 64 - 1
    with pytest.raises(ValueError):
        encode_dial_data_response(bytes(4097))


@pytest.mark.parametrize("body", [b"", b"\xff", bytes.fromhex("0a03" "1101"),
                                  bytes(MAX_MESSAGE_SIZE + 1)])
def test_malformed_v2_messages_raise(body):
    with pytest.raises(AutoNATMessageError):
        decode_message(body)


# -- nodes ---------------------------------------------------------------------------
def _server(nodes, **kwargs) -> Node:
    kwargs.setdefault("public_networks", LOOPBACK_PUBLIC)
    return nodes(enable_autonat_server=True, **kwargs)


def _connect(client: Node, *servers: Node) -> None:
    for server in servers:
        client.dial(p2p_addr(server), timeout=5)
        client.wait_identified(server.peer_id, timeout=5)


def _request(client: Node, server: Node, addrs: list[str], nonce: int = 7):
    """Open a raw dial-request stream and send a DialRequest; the stream."""
    stream = client.new_control().open_stream(p2p_addr(server), DIAL_REQUEST_PROTOCOL,
                                              timeout=5)
    stream.write(encode_dial_request([Multiaddr(a).to_bytes() for a in addrs], nonce))
    return stream


def _next(stream):
    return decode_message(read_message(stream, time.monotonic() + 10, MAX_MESSAGE_SIZE))


def test_v2_three_servers_find_a_listening_node_public(nodes):
    servers = [_server(nodes) for _ in range(3)]
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    _connect(client, *servers)
    result = client.probe_reachability(timeout=10, version=2)
    assert result.status == "public", result
    assert [str(a) for a in result.reachable_addrs] == [str(client.listen_addrs[0])]
    assert client.reachability() == result


def test_v2_a_firewalled_node_is_private(nodes):
    servers = [_server(nodes) for _ in range(3)]
    client = nodes(public_networks=LOOPBACK_PUBLIC, limits=Limits(max_inbound_connections=0))
    _connect(client, *servers)
    result = client.probe_reachability(timeout=10, version=2)
    assert result.status == "private", result
    assert {o.detail for o in result.observations} == {"E_DIAL_ERROR"}


def test_another_ip_costs_dial_data_which_our_client_pays(nodes):
    server = _server(nodes)
    # Listens on 127.0.0.2, connects from 127.0.0.1: the server sees another IP.
    client = nodes(listen=["/ip4/127.0.0.2/tcp/0"], public_networks=LOOPBACK_PUBLIC)
    _connect(client, server)
    stream = _request(client, server, [str(client.listen_addrs[0])])
    wanted = _next(stream)
    assert isinstance(wanted, DialDataRequest) and wanted.addr_idx == 0
    assert v2_server.DIAL_DATA_MIN <= wanted.num_bytes <= v2_server.DIAL_DATA_MAX
    stream.reset()  # refuse the cost: the request is aborted, nothing dialed
    time.sleep(0.2)
    assert len(client.connections(server.peer_id)) == 1
    result = client.probe_reachability([p2p_addr(server)], timeout=10, confirmations=1,
                                       version=2)
    assert [o.outcome for o in result.observations] == ["reachable"], result
    assert str(result.reachable_addrs[0]) == str(client.listen_addrs[0])


def test_the_server_dials_only_the_first_address_it_accepts(nodes):
    server = _server(nodes)
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    _connect(client, server)
    addrs = ["/dns4/example.com/tcp/1", f"/ip4/127.0.0.1/tcp/1/p2p/{server.peer_id}",
             "/ip4/127.0.0.1/udp/1", str(client.listen_addrs[0]),
             "/ip4/127.0.0.1/tcp/2"]
    stream = _request(client, server, addrs)
    response = _next(stream)
    # Index 3 was dialed; the client node serves no dial-back yet (it never probed).
    assert response == DialResponse(ResponseStatus.OK, 3, DialStatus.E_DIAL_BACK_ERROR)


def test_v2_refuses_private_addresses_and_rejects_beyond_the_shared_rate(nodes):
    strict = nodes(enable_autonat_server=True)  # loopback is not public for it
    client = nodes()
    stream = _request(client, strict, [str(client.listen_addrs[0])])
    assert _next(stream).status is ResponseStatus.E_DIAL_REFUSED
    server = _server(nodes, limits=Limits(max_autonat_dialbacks_per_peer=1))
    first = client.probe_reachability([p2p_addr(server)], timeout=10, confirmations=1)
    assert first.status == "unknown"  # v1: loopback is not public for the client
    stream = _request(client, server, [str(client.listen_addrs[0])])
    assert _next(stream).status is ResponseStatus.OK
    stream = _request(client, server, [str(client.listen_addrs[0])])
    assert _next(stream).status is ResponseStatus.E_REQUEST_REJECTED


def _fake_server(node: Node, answer) -> threading.Thread:
    """Serve one dial-request stream on ``node`` with ``answer(stream, request)``."""
    incoming = node.new_control().accept(DIAL_REQUEST_PROTOCOL)

    def run() -> None:
        for _, stream in incoming:
            answer(stream, _next(stream))
            return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_ok_without_our_nonce_is_not_believed(nodes):
    liar = nodes()

    def lie(stream, request):
        stream.write(encode_dial_response(ResponseStatus.OK, 0, DialStatus.OK))
        stream.close()
    thread = _fake_server(liar, lie)
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    result = client.probe_reachability([p2p_addr(liar)], timeout=10, confirmations=1,
                                       version=2)
    thread.join(5)
    assert [o.outcome for o in result.observations] == ["failed"]
    assert "not believed" in result.observations[0].detail
    assert result.status == "unknown"


def test_our_client_refuses_to_pay_too_much(nodes):
    greedy = nodes()
    outcome = []

    def ask_too_much(stream, request):
        stream.write(encode_dial_data_request(0, 1_000_000))
        stream.settimeout(5)
        try:
            outcome.append(stream.read())
        except ConnectionResetError:
            outcome.append("reset")
    thread = _fake_server(greedy, ask_too_much)
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    result = client.probe_reachability([p2p_addr(greedy)], timeout=10, confirmations=1,
                                       version=2)
    thread.join(5)
    assert outcome == ["reset"]
    assert [o.outcome for o in result.observations] == ["failed"]
    with pytest.raises(ValueError):
        client.probe_reachability(version=3)


def test_our_client_pays_at_most_max_dial_data_per_request_in_all(nodes):
    greedy = nodes()
    paid = [0]

    def ask_again_and_again(stream, request):
        try:
            for _ in range(5):  # 100 kB each time: 500 kB if nothing bounds the total
                stream.write(encode_dial_data_request(0, v2_client.MAX_DIAL_DATA))
                got = 0
                while got < v2_client.MAX_DIAL_DATA:
                    got += len(_next(stream).data)
                paid[0] += got
        except OSError:
            pass
        stream.reset()
    thread = _fake_server(greedy, ask_again_and_again)
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    result = client.probe_reachability([p2p_addr(greedy)], timeout=8, confirmations=1,
                                       version=2)
    thread.join(8)
    assert paid[0] == v2_client.MAX_DIAL_DATA  # the first request, to the byte
    assert [o.outcome for o in result.observations] == ["failed"]


def test_a_nonce_sent_over_the_connection_we_opened_proves_nothing(nodes):
    liar = nodes()
    client = nodes(public_networks=LOOPBACK_PUBLIC)

    def dial_back_on_our_connection(stream, request):
        try:
            back = liar.new_control().open_stream(client.peer_id, DIAL_BACK_PROTOCOL,
                                                  timeout=5)  # no new dial: ours is reused
            back.write(encode_dial_back(request.nonce))
            back.settimeout(5)
            back.read()
        except OSError:
            pass  # reset by the client (today's: answered)
        stream.write(encode_dial_response(ResponseStatus.OK, 0, DialStatus.OK))
        stream.close()
    thread = _fake_server(liar, dial_back_on_our_connection)
    result = client.probe_reachability([p2p_addr(liar)], timeout=10, confirmations=1,
                                       version=2)
    thread.join(5)
    assert [o.outcome for o in result.observations] == ["failed"], result
    assert "not believed" in result.observations[0].detail


def test_a_dial_back_must_arrive_on_the_kind_of_address_asked_about():
    asked = Multiaddr("/ip4/198.18.0.2/tcp/4001")
    assert dial_back_matches(Multiaddr("/ip4/10.0.0.2/tcp/5000"), asked)  # behind a NAT
    assert not dial_back_matches(Multiaddr("/ip4/10.0.0.2/tcp/4001/ws"), asked)
    assert not dial_back_matches(Multiaddr("/ip6/::1/tcp/4001"), asked)
    assert dial_back_matches(Multiaddr("/ip6/::1/tcp/1/ws"),
                             Multiaddr(f"/ip6/2001:db8::1/tcp/2/ws/p2p/{PEER}"))
    assert not dial_back_matches(None, asked)


def test_an_unpaid_request_does_not_use_up_the_dialback_budget(nodes):
    server = _server(nodes, limits=Limits(max_autonat_dialbacks_per_peer=1))
    client = nodes(public_networks=LOOPBACK_PUBLIC)
    port = client.listen_addrs[0].value_for_protocol(6)
    stream = _request(client, server, [f"/ip4/127.0.0.2/tcp/{port}"])
    assert isinstance(_next(stream), DialDataRequest)
    stream.reset()  # the spec: the client rejects the cost
    stream = _request(client, server, [str(client.listen_addrs[0])])
    assert _next(stream).status is ResponseStatus.OK  # the one dial-back of the minute
    stream = _request(client, server, [str(client.listen_addrs[0])])
    assert _next(stream).status is ResponseStatus.E_REQUEST_REJECTED


def test_an_address_whose_transport_we_lack_is_skipped_not_called_unreachable(
        nodes, monkeypatch):
    server = _server(nodes)
    client = nodes(public_networks=LOOPBACK_PUBLIC)

    def no_wsproto():
        raise ImportError("pip install 'libp2p_stream_sync[ws]'")
    monkeypatch.setattr(websocket, "require_wsproto", no_wsproto)
    ws = f"{client.listen_addrs[0]}/ws"
    stream = _request(client, server, [ws])
    assert _next(stream) == DialResponse(ResponseStatus.E_DIAL_REFUSED, 0, DialStatus.UNUSED)
    stream = _request(client, server, [ws, str(client.listen_addrs[0])])
    assert _next(stream) == DialResponse(ResponseStatus.OK, 1, DialStatus.E_DIAL_BACK_ERROR)
