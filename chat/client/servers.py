"""A list of servers, for a service of several nodes (README "Running a cluster"):
``host1[:port],host2[:port]`` (an IPv6 address in brackets when it has a port). The
client connects to the first that answers; after losing the one it was on, it tries the
next ones in turn, wrapping around. Every node must present the key the client trusts:
a node with another key is refused as a single server would be, and no other is tried."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.client.reconnect import worth_retrying
from chat.client.transport import ClientError, ClientSession

Opener = Callable[..., Awaitable[ClientSession]]


def parse_servers(text: str, default_port: int) -> list[tuple[str, int]]:
    """The (host, port) pairs of SERVER_HOST; ValueError with the reason if malformed."""
    servers = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError("the list of servers has an empty entry")
        host, port = item, default_port
        if "://" in item:
            scheme = item.partition("://")[0].lower()
            hint = " (for wss:// add --tls)" if scheme in ("wss", "https") else ""
            raise ValueError(f"{item!r}: give the host and port without a scheme{hint}, e.g. chat.lan:8767")
        if any(c.isspace() or c in "/@?#" for c in item):
            raise ValueError(f"{item!r}: not a host name or address")
        if item.startswith("["):
            end = item.find("]")
            if end < 0:
                raise ValueError(f"{item!r}: an IPv6 address needs its closing ']'")
            host, rest = item[1:end], item[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{item!r}: expected ':PORT' after ']'")
                port = _port(rest[1:], item)
        elif item.count(":") == 1:
            host, _, number = item.partition(":")
            port = _port(number, item)
        if not host:
            raise ValueError(f"{item!r}: no host")
        servers.append((host, port))
    return servers


def _port(text: str, item: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{item!r}: the port must be a number from 1 to 65535")
    return int(text)


class ServerList:
    """Opens a session with one of ``servers`` (open_session's arguments after them)."""

    def __init__(
        self, servers: list[tuple[str, int]], opener: Opener, key: rsa.RSAPublicKey, key_label: str
    ) -> None:
        self.servers = servers
        self._open, self._key, self._label = opener, key, key_label
        #: The server of the current (or last) session.
        self.current = 0

    async def connect(self) -> ClientSession:
        """The first server that answers, from the current one on."""
        return await self._from(self.current)

    async def reconnect(self) -> ClientSession:
        """After losing the current server: the next ones first, the lost one last."""
        return await self._from(self.current + 1)

    async def _from(self, start: int) -> ClientSession:
        failures: list[ClientError] = []
        for step in range(len(self.servers)):
            index = (start + step) % len(self.servers)
            host, port = self.servers[index]
            try:
                session = await self._open(host, port, self._key, key_label=self._label)
            except ClientError as error:
                if len(self.servers) == 1 or not worth_retrying(error):
                    raise
                failures.append(error)
                continue
            self.current = index
            return session
        raise ClientError(" ".join(error.message for error in failures), failures[-1].exit_code)
