"""The chat server: an asyncio shell (app, wire, connection) around websockets' sans-I/O
protocol and our own (session), a hub that routes envelopes, and small handlers that
implement each command."""
