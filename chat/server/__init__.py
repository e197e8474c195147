"""The chat server: an asyncio/websockets shell (app, connection) around a hub that
routes envelopes and small handlers that implement each command."""
