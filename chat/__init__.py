"""chat: a self-hosted WebSocket chat service whose every byte between a client and the
server is encrypted and authenticated. The encryption is client to server, not end to
end: the server reads, relays and stores messages in the clear (SECURITY.md)."""

__version__ = "0.1.0"
