"""chat: a self-hosted, end-to-end encrypted WebSocket chat service."""

__version__ = "0.1.0"
