"""Transports: turning multiaddrs into sockets."""
