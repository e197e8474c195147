"""The sans-I/O protocol core: handshake state machines, record layer, envelope codec.

Nothing in this package touches a socket or an event loop: each piece takes bytes and
returns bytes or values, so the server, the terminal client and tests drive it alike.
The wire format is specified in PROTOCOL.md at the repository root.
"""
