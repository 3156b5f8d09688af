"""A node-wide NoiseIdentity is shared by many handshakes."""

import pytest

from libp2p_stream_sync import Keypair
from libp2p_stream_sync.engines.noise import NoiseHandshake, NoiseIdentity


def run_handshake(initiator: NoiseHandshake, responder: NoiseHandshake) -> None:
    responder.receive_data(initiator.data_to_send())   # -> e
    initiator.receive_data(responder.data_to_send())   # <- e, ee, s, es
    responder.receive_data(initiator.data_to_send())   # -> s, se
    assert initiator.complete and responder.complete


def test_shared_identity_serves_many_handshakes():
    server_keys, client_keys = Keypair.generate(), Keypair.generate()
    identity = NoiseIdentity(server_keys)
    statics = set()
    for _ in range(3):
        responder = NoiseHandshake(server_keys, initiator=False, identity=identity,
                                   muxers=["/yamux/1.0.0"])
        initiator = NoiseHandshake(client_keys, initiator=True,
                                   expected_peer=server_keys.peer_id, muxers=["/yamux/1.0.0"])
        run_handshake(initiator, responder)
        assert initiator.remote_peer_id == server_keys.peer_id
        assert initiator.selected_muxer() == "/yamux/1.0.0"
        statics.add(responder._static_public)
    assert statics == {identity.static_public}
    assert identity.payload(["/yamux/1.0.0"]) is identity.payload(("/yamux/1.0.0",))


def test_identity_must_match_the_keypair():
    with pytest.raises(ValueError):
        NoiseHandshake(Keypair.generate(), initiator=True,
                       identity=NoiseIdentity(Keypair.generate()))
