"""The server's configuration: every limit and option, with its default, in one place.

``chat-server``'s options (``__main__.py``) fill it in; every component takes its
values from here (README, "Server options and limits")."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8767
    #: SQLite database file (":memory:" keeps nothing across restarts), or a
    #: ``postgresql://`` URL: the database shared by the nodes of a cluster.
    db_path: str = "chat.db"
    #: ``redis://HOST:PORT/N``: the Redis that joins this node to the others of a cluster
    #: (routing, presence, name claims); None: a single node.
    redis_url: str | None = None
    #: Server processes on this address and port (SO_REUSEPORT); more than one needs Redis.
    workers: int = 1
    #: Bind with SO_REUSEPORT (set for each process of --workers).
    reuse_port: bool = False
    #: TLS on the port (--tls, --tls-cert/--tls-key): https:// and wss://; None: plain.
    tls: ssl.SSLContext | None = None
    #: Messages kept per conversation (everyone, each pair of users, each group), and
    #: days a message is kept (0: as long as the count allows).
    history_limit: int = 1000
    retention_days: float = 0.0
    #: Store conversation messages at all (off: no history, search or replay; for
    #: measurements and throwaway servers).
    store_messages: bool = True
    #: Seconds a lost session that can resume stays logged in (its name held, its groups
    #: kept, nobody told it left) waiting for its client to come back (0: not at all).
    resume_linger: float = 60.0
    #: Seconds before a wrong password is answered.
    wrong_password_delay: float = 1.0
    #: Seconds a session ticket is good for (PROTOCOL.md 2.7: a reconnecting client skips
    #: the RSA decryption with it); 0: no tickets issued or accepted.
    ticket_lifetime: int = 3600
    #: Seconds a new connection has to complete the handshake.
    handshake_timeout: float = 10.0
    #: Bytes of sealed, unsent events a connection may have queued before it is dropped.
    max_backlog_bytes: int = 4 * 1024 * 1024
    #: Seconds allowed for flushing and closing a connection (the whole shutdown: 2x).
    close_timeout: float = 2.0
    #: Seconds a connection has, after the handshake, to log in.
    login_timeout: float = 60.0
    #: Requests per second sustained per connection (0: unlimited), and the burst allowed.
    rate_limit: float = 10.0
    rate_burst: int = 30
    #: Kernel send buffer per connection, bytes. 0 keeps the system's autotuning, which
    #: is faster for file transfers but lets the kernel hold up to a few MiB (Linux:
    #: net.ipv4.tcp_wmem) for a reader that stopped, before --max-backlog counts.
    socket_send_buffer: int = 0
    #: Connections the kernel may hold waiting to be accepted.
    listen_backlog: int = 1024
    #: Requests per second and bytes per second that all connections from one network
    #: (IPv4 /24, IPv6 /64) may send together (0: unlimited); bursts of 3x and 4x. A
    #: class of 64 behind one NAT may each use their own full rate (64 x 10/s).
    network_rate_limit: float = 640.0
    network_byte_rate: float = 2 << 20
    #: Bytes per second one network's broadcasts may make this server write (their size
    #: times the connections they go to; review M4), after a burst of four seconds' worth.
    network_fanout_rate: float = 256 << 20
    #: Seconds a started transfer may go without a chunk or an ack before it is aborted,
    #: and transfers one user may be receiving (or be offered) at once.
    transfer_idle_timeout: float = 60.0
    max_incoming_transfers: int = 16
    #: Private messages kept for one offline registered user (count, bytes of text), the
    #: share of that one sender may fill, all offline messages on the server (bytes), and
    #: days before a stored message expires.
    offline_max_messages: int = 1000
    offline_max_bytes: int = 4 << 20
    offline_sender_share: float = 0.25
    offline_server_bytes: int = 1 << 30
    offline_days: float = 30.0
    #: Refuse guests: only registered users log in (accounts made with --add-account).
    registered_only: bool = False
    #: Names nobody may log in as, besides names.RESERVED_NAMES (compared by skeleton).
    reserved_names: frozenset[str] = frozenset()
    #: Connections in all and from one IP address (0: unlimited), counted from accept.
    max_connections: int = 20000
    max_connections_per_ip: int = 128
    #: Connections from one address still in their HTTP upgrade, and the time they have.
    max_upgrading_per_ip: int = 64
    upgrade_timeout: float = 5.0
    #: Handshakes (RSA decryptions) per second from one address and in all, and how many
    #: may wait for a core; past these a ClientHello is answered SERVER_BUSY.
    handshakes_per_ip: float = 20.0
    handshakes_per_second: float = 1000.0
    handshake_queue: int = 256
    #: WebSocket pings a peer may send per second, and in a burst.
    pings_per_second: float = 2.0
    ping_burst: int = 20
    #: Groups one user may be a member of, and groups on the server.
    max_groups_per_user: int = 100
    max_groups: int = 10000
    #: Groups one user may own; groups one creator may create per hour (a network six
    #: times that); days unused before a stored group is deleted (0: never).
    max_owned_groups: int = 20
    group_creations_per_hour: float = 10.0
    group_expiry_days: float = 365.0
    #: Largest file relayed, bytes a sender may be ahead of its slowest recipient, and
    #: transfers one user may take part in at once.
    max_file_size: int = 1 << 30
    transfer_window: int = 4 * 1024 * 1024
    max_transfers_per_user: int = 8
    #: Seconds recipients have to accept or decline a file before they count as failed.
    offer_timeout: float = 60.0
    #: Keepalive ping interval and timeout, in seconds.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    #: Password attempts per (name, address) and per address prefix (IPv4 /24, IPv6 /64)
    #: in 10 minutes, counted before the check and refunded when it succeeds.
    max_login_attempts: int = 5
    max_login_attempts_per_ip: int = 20
    #: Cap, in seconds, of the growing delay before checking a password for a name that
    #: has recent failures from anywhere (never a refusal: the owner still gets in).
    login_delay_cap: float = 30.0
    #: Failed logins server-wide in 10 minutes beyond which a warning is logged.
    failed_login_alert: int = 1000
    #: Password checks that may wait for a free core before requests get server_busy.
    password_queue: int = 64
    #: Accounts registered per address prefix per hour.
    max_registrations_per_ip: int = 5


def is_postgres_url(db: str) -> bool:
    """Whether ``--db`` names a PostgreSQL database rather than an SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))
