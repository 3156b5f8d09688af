"""Sans-IO protocol engines: no sockets, no threads, no clocks of their own.

See docs/ENGINES.md for the contract every engine follows.
"""
