#!/usr/bin/env python3
"""Keep a node's peer id across runs: store its key pair in a file.

::

    python3 examples/persistent_peer_id.py node.key    # created node.key, peer id 12D3KooW...
    python3 examples/persistent_peer_id.py node.key    # loaded node.key, the same peer id

A peer id is the hash of the node's public key, so the same key gives the same id,
and the addresses other peers saved (``.../p2p/<peer id>``) stay valid. The file holds
``Keypair.to_bytes()``: the protobuf ``PrivateKey`` message of the libp2p peer-id
spec, the encoding go-, rust- and js-libp2p serialize private keys with. It is a
secret: it is created readable by its owner only (mode 0600).
"""

from __future__ import annotations

import os
import sys

from libp2p_stream_sync import Keypair, Node


def load_or_create_keypair(path: str) -> tuple[Keypair, bool]:
    """The key pair stored at ``path``; a new one is saved there first if it is absent.

    Returns ``(keypair, created)``. Raises ``ValueError`` if the file holds no valid key.
    """
    try:
        with open(path, "rb") as f:
            return Keypair.from_bytes(f.read()), False
    except FileNotFoundError:
        pass
    keypair = Keypair.generate()  # Ed25519
    # O_EXCL: never overwrite a key that another process has just written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(keypair.to_bytes())
    return keypair, True


def main(path: str) -> None:
    keypair, created = load_or_create_keypair(path)
    print(f"{'created' if created else 'loaded'} {path}, peer id {keypair.peer_id}")
    with Node(keypair, listen=["/ip4/127.0.0.1/tcp/0"]) as node:
        assert node.peer_id == keypair.peer_id
        print(f"listening on {node.listen_addrs[0]}/p2p/{node.peer_id}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "node.key")
