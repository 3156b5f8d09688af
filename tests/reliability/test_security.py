"""Security properties (issue #7, item 6), over real loopback sockets."""

from __future__ import annotations

import inspect

import pytest

from libp2p_stream_sync import Keypair, Node, OpenStreamError
from libp2p_stream_sync.engines.multistream import (MultistreamDialer,
                                                    NegotiationFailed, encode_message)
from libp2p_stream_sync.engines.yamux import FLAG_SYN, HEADER, TYPE_WINDOW_UPDATE

from reliability_helpers import guarded, make_node  # noqa: F401 (fixtures)
from reliability_helpers import (ECHO, YamuxClient, closed_by_peer, connect_raw, p2p_addr,
                                 wait_until)

pytestmark = pytest.mark.timeout(60)


def test_dialing_a_peer_id_never_yields_a_stream_to_another_peer(make_node, guarded):
    g = guarded()
    impostor = g.server                 # listens, serves echo
    victim = Keypair.generate().peer_id  # the peer we want, not at that address
    control = g.good.new_control()
    wrong = f"{impostor.listen_addrs[0]}/p2p/{victim}"
    with pytest.raises(OpenStreamError) as info:
        control.open_stream(wrong, ECHO, timeout=5)
    assert info.value.kind == "wrong-peer", info.value
    # with a live connection to the impostor, and the victim's address book entry
    # pointing at the impostor, the impostor's connection is never reused for it
    g.check()
    g.good.add_address(victim, impostor.listen_addrs[0])
    with pytest.raises(OpenStreamError) as info:
        control.open_stream(victim, ECHO, timeout=5)
    assert info.value.kind == "wrong-peer"
    with pytest.raises(ConnectionError):
        g.good.dial(wrong, timeout=5)
    assert g.good.connected_peers() == [impostor.peer_id]
    # the right id at the right address still works
    stream = control.open_stream(p2p_addr(impostor), ECHO, timeout=5)
    assert stream.peer_id == impostor.peer_id
    stream.reset()


def _secure_echo_frames(c: YamuxClient) -> list[bytes]:
    """Two encrypted frames for a new echo stream (SYN, then a proposal)."""
    sid = c.session.open_stream()
    c.session.data_to_send()
    syn = HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)
    return [bytes(c.transport.encrypt(syn)),
            bytes(c.transport.encrypt(HEADER.pack(0, TYPE_WINDOW_UPDATE, 0, sid, 1)))]


@pytest.mark.parametrize("attack", ["flip-bit", "flip-length", "replay", "reorder",
                                    "drop-one"])
def test_tampered_noise_frames_close_the_connection(guarded, attack):
    g = guarded()
    c = YamuxClient(g.server)
    assert c.echo(b"before") == b"before"  # a working, authenticated connection
    f1, f2 = _secure_echo_frames(c)
    if attack == "flip-bit":
        bad = bytearray(f1)
        bad[len(bad) // 2] ^= 0x04
        wire = bytes(bad)
    elif attack == "flip-length":
        bad = bytearray(f1)
        bad[1] ^= 0x01  # the length prefix: the tag no longer lines up
        wire = bytes(bad) + b"\x00" * 64
    elif attack == "replay":
        wire = f1 + f1
    elif attack == "reorder":
        wire = f2 + f1
    else:
        wire = f2  # frame 1 never sent: frame 2 uses the wrong nonce
    c.sock.sendall(wire)
    assert closed_by_peer(c.sock, 3) is not None, f"{attack}: the connection survived"
    c.close()
    g.check()  # other connections are unaffected


def test_there_is_no_plaintext_or_unauthenticated_mode(guarded):
    g = guarded()
    params = set(inspect.signature(Node).parameters)
    assert not params & {"insecure", "plaintext", "transports"}, params
    for name in ("plaintext", "/plaintext/2.0.0", "insecure"):
        with pytest.raises(ValueError):
            Node(security=[name])  # only Noise and TLS exist
    for proposal in ("/plaintext/2.0.0", "/plaintext/1.0.0", "/yamux/1.0.0",
                     "/mplex/6.7.0", ECHO):
        sock = connect_raw(g.server)
        dialer = MultistreamDialer([proposal])
        sock.sendall(dialer.data_to_send())
        sock.settimeout(5)
        with pytest.raises(NegotiationFailed):
            while dialer.receive_data(sock.recv(4096)) is None:
                pass
        # speaking a muxer anyway (as a plaintext peer would) gets nowhere
        try:
            sock.sendall(encode_message(proposal) + HEADER.pack(0, 1, FLAG_SYN, 1, 0))
        except OSError:
            pass
        sock.close()
    assert wait_until(lambda: g.server.connected_peers() == [g.good.peer_id], 3)
    assert len(g.server.connected_peers()) == 1
    # the only security protocol a node offers is /noise
    sock = connect_raw(g.server)
    ls = MultistreamDialer(["/noise"])
    sock.sendall(ls.data_to_send())
    sock.settimeout(5)
    assert ls.receive_data(sock.recv(4096)) is not None or \
        ls.receive_data(sock.recv(4096)) is not None
    sock.close()
