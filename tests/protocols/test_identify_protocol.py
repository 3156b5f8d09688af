"""identify and identify push between real nodes, and the message helpers."""

from __future__ import annotations

import pytest
from multiaddr import Multiaddr

from libp2p_stream_sync import Keypair, OpenStreamError
from libp2p_stream_sync.codec.protobuf import encode
from libp2p_stream_sync.codec.varint import encode_uvarint
from libp2p_stream_sync.protocols import identify

from protocol_helpers import FakeStream, eventually
import protocol_helpers

BUILTINS = {identify.PROTOCOL, identify.PUSH_PROTOCOL, "/ipfs/ping/1.0.0"}

connected = protocol_helpers.connected  # fixtures
nodes = protocol_helpers.nodes


def test_both_sides_learn_protocols_addresses_and_versions(connected):
    a, b = connected
    info_a = b.wait_identified(a.peer_id, timeout=5)
    info_b = a.wait_identified(b.peer_id, timeout=5)
    assert set(info_a.protocols) == BUILTINS | {"/perf/1.0.0"}
    assert set(info_b.protocols) == BUILTINS
    assert info_a.listen_addrs == a.listen_addrs
    assert info_b.listen_addrs == b.listen_addrs
    assert info_a.agent_version == identify.AGENT_VERSION
    assert info_a.protocol_version == "ipfs/0.1.0"
    assert info_a.public_key == a.keypair.public_key
    assert info_b.public_key == b.keypair.public_key
    # observedAddr: each side saw the other's end of the TCP connection.
    assert str(info_b.observed_addr).startswith("/ip4/127.0.0.1/tcp/")
    # a never dialed b: b's listen address reached a's address book through identify.
    assert b.listen_addrs[0] in a.addresses_of(b.peer_id)
    assert a.peer_protocols(b.peer_id) == info_b.protocols


def test_identified_peer_can_be_dialed_back_by_peer_id(connected):
    a, b = connected
    a.wait_identified(b.peer_id, timeout=5)
    assert a.ping(b.peer_id, timeout=5)


def test_new_protocol_reaches_the_peer_by_push_and_so_does_its_removal(connected):
    a, b = connected
    b.wait_identified(a.peer_id, timeout=5)
    incoming = a.new_control().accept("/custom/1.0.0")
    eventually(lambda: "/custom/1.0.0" in b.peer_protocols(a.peer_id))
    incoming.close()
    eventually(lambda: "/custom/1.0.0" not in b.peer_protocols(a.peer_id))
    assert identify.PROTOCOL in b.peer_protocols(a.peer_id)


def test_unknown_peer_is_not_identified(nodes):
    a = nodes()
    stranger = Keypair.generate().peer_id
    assert a.identify_info(stranger) is None
    assert a.peer_protocols(stranger) == []
    with pytest.raises(TimeoutError):
        a.wait_identified(stranger, timeout=0.05)


def test_identify_info_is_a_copy(connected):
    a, b = connected
    info = b.wait_identified(a.peer_id, timeout=5)
    info.protocols.clear()
    assert b.peer_protocols(a.peer_id)


def test_wait_identified_reports_a_failed_identify(nodes):
    a, b = nodes(), nodes()
    # Pretend a does not speak identify: remove its responder before b connects.
    with a._lock:
        a._registry.discard(identify.PROTOCOL)
    b.dial(f"{a.listen_addrs[0]}/p2p/{a.peer_id}", timeout=5)
    with pytest.raises(OpenStreamError, match="identify"):
        b.wait_identified(a.peer_id, timeout=5)


# -- message helpers -----------------------------------------------------------------------
def _key() -> bytes:
    return Keypair.generate().public_key.to_protobuf()


def test_message_round_trip():
    kp = Keypair.generate()
    addr = Multiaddr("/ip4/10.0.0.1/tcp/4001")
    raw = identify.encode_message(public_key=kp.public_key.to_protobuf(),
                                  listen_addrs=[addr.to_bytes()],
                                  observed_addr=addr.to_bytes(),
                                  protocols=["/a/1", "/b/2"])
    (message,) = identify.split_messages(raw)
    info = identify.IdentifyInfo(kp.peer_id)
    identify.apply_message(info, message)
    assert info.protocols == ["/a/1", "/b/2"]
    assert info.listen_addrs == [addr]
    assert info.observed_addr == addr
    assert info.agent_version.startswith("libp2p_stream_sync/")


def test_outgoing_message_is_bounded_to_4_kib():
    protocols = [f"/protocol/{i:04d}/1.0.0" for i in range(500)]
    raw = identify.encode_message(public_key=_key(), listen_addrs=[],
                                  observed_addr=None, protocols=protocols)
    assert len(raw) <= identify.MAX_SEND_SIZE
    (message,) = identify.split_messages(raw)
    assert message["protocols"] == protocols[:len(message["protocols"])]
    assert 100 < len(message["protocols"]) < 500


def test_several_messages_are_merged():
    kp = Keypair.generate()
    first = encode(identify.IDENTIFY, {"publicKey": kp.public_key.to_protobuf(),
                                       "protocols": ["/a/1"], "agentVersion": "x"})
    second = encode(identify.IDENTIFY, {"protocols": ["/b/1"], "agentVersion": "y"})
    data = encode_uvarint(len(first)) + first + encode_uvarint(len(second)) + second
    merged = identify.read_messages(FakeStream([data[:5], data[5:]]), timeout=1)
    assert merged["protocols"] == ["/a/1", "/b/1"]
    assert merged["agentVersion"] == "y"


def test_oversized_and_truncated_input_is_rejected():
    body = encode(identify.IDENTIFY, {"agentVersion": "z" * 9000})
    with pytest.raises(identify.IdentifyError, match="larger"):
        identify.read_messages(FakeStream([encode_uvarint(len(body)) + body]), timeout=1)
    with pytest.raises(identify.IdentifyError, match="truncated"):
        identify.split_messages(encode_uvarint(50) + b"\x00" * 10)


def test_public_key_of_another_peer_is_rejected():
    info = identify.IdentifyInfo(Keypair.generate().peer_id)
    with pytest.raises(identify.IdentifyError, match="does not belong"):
        identify.apply_message(info, {"publicKey": _key(), "protocols": []})


def test_push_replaces_only_the_fields_it_carries():
    info = identify.IdentifyInfo(Keypair.generate().peer_id, protocols=["/old/1"],
                                 listen_addrs=[Multiaddr("/ip4/1.2.3.4/tcp/1")],
                                 agent_version="agent")
    identify.apply_message(info, {"protocols": ["/new/1"], "listenAddrs": []}, push=True)
    assert info.protocols == ["/new/1"]
    assert info.listen_addrs == [Multiaddr("/ip4/1.2.3.4/tcp/1")]
    assert info.agent_version == "agent"
    identify.apply_message(info, {"protocols": [], "listenAddrs": []})
    assert info.protocols == [] and info.listen_addrs == []


def test_undecodable_addresses_are_skipped():
    info = identify.IdentifyInfo(Keypair.generate().peer_id)
    good = Multiaddr("/ip4/1.2.3.4/tcp/1").to_bytes()
    identify.apply_message(info, {"listenAddrs": [b"\xff\xff\xff", good, good]})
    assert info.listen_addrs == [Multiaddr("/ip4/1.2.3.4/tcp/1")]


def test_addresses_and_protocols_are_capped_and_parsed_in_linear_time():
    """Issue #12 (7): an 8 KiB message can carry ~1,160 distinct addresses; only the
    first MAX_LISTEN_ADDRS are parsed (duplicates found by their bytes)."""
    import time
    addrs = [Multiaddr(f"/ip4/10.{i >> 8 & 255}.{i & 255}.1").to_bytes() for i in range(1159)]
    info = identify.IdentifyInfo(Keypair.generate().peer_id)
    message = {"listenAddrs": addrs[:1] * 10 + addrs,
               "protocols": [f"/p/{i}" for i in range(1000)]}
    start = time.perf_counter()
    identify.apply_message(info, message)
    took = time.perf_counter() - start
    assert len(info.listen_addrs) == identify.MAX_LISTEN_ADDRS
    assert len(set(info.listen_addrs)) == len(info.listen_addrs)  # no duplicates kept
    assert len(info.protocols) == identify.MAX_PROTOCOLS
    assert took < 0.05, f"{took * 1000:.1f} ms"


def test_a_push_that_arrives_with_its_negotiation_and_end_is_applied(connected):
    """A lazily opened push: request, message and FIN may reach the reactor-side
    receiver before it starts watching the stream."""
    a, b = connected
    a.wait_identified(b.peer_id, timeout=5)  # else identify's answer may come after
    stream = b.new_control().open_stream(a.peer_id, identify.PUSH_PROTOCOL, timeout=5,
                                         lazy=True)
    stream.write(identify.encode_message(
        public_key=b.keypair.public_key.to_protobuf(),
        listen_addrs=[Multiaddr("/ip4/10.9.8.7/tcp/4001").to_bytes()],
        observed_addr=None, protocols=["/pushed/1.0.0"]))
    stream.close()
    eventually(lambda: "/pushed/1.0.0" in a.peer_protocols(b.peer_id))
