"""``python -m chat.server [PRIVATE_PEM]``: start the chat server (README "Start the server")."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import socket
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from chat.keys import (
    DEFAULT_BITS,
    PUBLIC_NAME,
    KeyFileError,
    fingerprint,
    generate_private_key,
    load_private_key,
    write_key_pair,
)
from chat.protocol.tickets import MAX_TICKET_LIFETIME
from chat.server import collector, logs, process_limits, workers
from chat.server.add_account import AddAccountError, add_account
from chat.server.app import ChatServer
from chat.server.config import ServerConfig, is_postgres_url
from chat.server.web import is_loopback
from chat.tls import TlsFileError, lan_addresses, made_certificate, server_context

DEFAULT_PRIVATE_PEM = Path("keys") / "private.pem"
DEFAULT_PORT = 8767
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
#: glibc mallopt() parameters (malloc.h).
M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3

#: Server limits exposed as options: (option, ServerConfig field, type, metavar, help).
LIMIT_OPTIONS: list[tuple[str, str, type, str, str]] = [
    ("--handshake-timeout", "handshake_timeout", float, "SECONDS", "time to complete the handshake"),
    ("--login-timeout", "login_timeout", float, "SECONDS", "time to log in after the handshake"),
    ("--close-timeout", "close_timeout", float, "SECONDS", "time for a peer to finish closing"),
    ("--ping-interval", "ping_interval", float, "SECONDS", "keepalive ping interval"),
    ("--ping-timeout", "ping_timeout", float, "SECONDS", "drop a peer that does not answer a ping in time"),
    ("--rate-limit", "rate_limit", float, "PER_SECOND", "requests per second per connection, 0 = off"),
    ("--rate-burst", "rate_burst", int, "N", "requests allowed in a burst"),
    ("--max-backlog", "max_backlog_bytes", int, "BYTES", "unread bytes queued per client, then cut off"),
    ("--socket-send-buffer", "socket_send_buffer", int, "BYTES", "kernel send buffer per connection"),
    ("--max-connections", "max_connections", int, "N", "connections in all, 0 = unlimited"),
    ("--max-per-ip", "max_connections_per_ip", int, "N", "connections from one IP address, 0 = unlimited"),
    ("--max-groups-per-user", "max_groups_per_user", int, "N", "groups one user may be in"),
    ("--max-groups", "max_groups", int, "N", "groups on the server"),
    ("--max-owned-groups", "max_owned_groups", int, "N", "groups one user may own, 0 = unlimited"),
    ("--group-creations-per-hour", "group_creations_per_hour", float, "N",
     "groups one user may create per hour (six times that one network), 0 = unlimited"),
    ("--group-expiry-days", "group_expiry_days", float, "DAYS",
     "days without a message or change before a stored group is deleted, 0 = never"),
    ("--wrong-password-delay", "wrong_password_delay", float, "SECONDS", "delay on a wrong password"),
    ("--history-limit", "history_limit", int, "N", "messages kept per conversation (all, a pair, a group)"),
    ("--retention-days", "retention_days", float, "DAYS", "days a message is kept, 0 = no age limit"),
    ("--resume-linger", "resume_linger", float, "SECONDS", "how long a lost session waits for its client"),
    ("--ticket-lifetime", "ticket_lifetime", int, "SECONDS",
     "how long a session ticket lets a client reconnect without RSA, 0 = no tickets, at most 604800"),
    ("--max-file-size", "max_file_size", int, "BYTES", "largest file relayed"),
    ("--transfer-window", "transfer_window", int, "BYTES", "file bytes in flight per transfer"),
    ("--offer-timeout", "offer_timeout", float, "SECONDS", "time recipients have to answer a file offer"),
    ("--max-transfers-per-user", "max_transfers_per_user", int, "N", "transfers one user may run at once"),
    ("--max-login-attempts", "max_login_attempts", int, "N",
     "password attempts per name from one address in 10 minutes"),
    ("--max-login-attempts-per-ip", "max_login_attempts_per_ip", int, "N",
     "password attempts from one address prefix (IPv4 /24, IPv6 /64) in 10 minutes"),
    ("--login-delay-cap", "login_delay_cap", float, "SECONDS",
     "longest delay before checking a password for a name under attack"),
    ("--failed-login-alert", "failed_login_alert", int, "N",
     "failed logins in 10 minutes server-wide before a warning is logged"),
    ("--password-queue", "password_queue", int, "N", "password checks waiting for a core, then server_busy"),
    ("--max-registrations-per-ip", "max_registrations_per_ip", int, "N",
     "accounts registered from one address prefix per hour"),
    ("--max-upgrading-per-ip", "max_upgrading_per_ip", int, "N",
     "connections from one address still in their HTTP upgrade, 0 = unlimited"),
    ("--upgrade-timeout", "upgrade_timeout", float, "SECONDS", "time to finish the HTTP upgrade"),
    ("--handshakes-per-ip", "handshakes_per_ip", float, "PER_SECOND",
     "handshakes (RSA decryptions) per second from one address, after a burst, 0 = unlimited"),
    ("--handshakes-per-second", "handshakes_per_second", float, "PER_SECOND",
     "handshakes per second in all, 0 = unlimited"),
    ("--handshake-queue", "handshake_queue", int, "N", "handshakes waiting for a core, then SERVER_BUSY"),
    ("--offline-max-messages", "offline_max_messages", int, "N",
     "private messages kept for one offline user"),
    ("--offline-max-bytes", "offline_max_bytes", int, "BYTES", "bytes of text kept for one offline user"),
    ("--offline-sender-share", "offline_sender_share", float, "FRACTION",
     "share of one offline user's mailbox one sender (account, or a guest's network) may fill"),
    ("--offline-server-bytes", "offline_server_bytes", int, "BYTES",
     "bytes of offline messages on the server"),
    ("--offline-days", "offline_days", float, "DAYS", "days an offline message is kept"),
    ("--network-rate-limit", "network_rate_limit", float, "PER_SECOND",
     "requests per second from one network (IPv4 /24, IPv6 /64) in all, 0 = off"),
    ("--network-byte-rate", "network_byte_rate", float, "BYTES_PER_SECOND",
     "bytes of requests per second from one network in all, 0 = off"),
    ("--network-fanout-rate", "network_fanout_rate", float, "BYTES_PER_SECOND",
     "bytes per second one network's broadcasts may make the server write to all, 0 = off"),
    ("--transfer-idle-timeout", "transfer_idle_timeout", float, "SECONDS",
     "time a started transfer may go without data before it is aborted"),
    ("--max-incoming-transfers", "max_incoming_transfers", int, "N",
     "transfers one user may be offered or receive at once"),
    ("--pings-per-second", "pings_per_second", float, "PER_SECOND",
     "WebSocket pings a peer may send per second, after a burst of 20"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-server",
        description="Run the encrypted chat server. With no PRIVATE_PEM and no keys/private.pem, "
        "a new key pair is generated in keys/ on first start.",
    )
    parser.add_argument(
        "private_pem", nargs="?", type=Path, metavar="PRIVATE_PEM",
        help=f"the server's RSA private key (default: {DEFAULT_PRIVATE_PEM})",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--db", dest="db_path", default=ServerConfig.db_path, metavar="PATH|URL",
        help="SQLite database for accounts, groups and messages (default: chat.db in the working "
        "directory; ':memory:' keeps nothing), or postgresql://USER@HOST/DBNAME: the database "
        "the nodes of a cluster share",
    )
    parser.add_argument(
        "--redis", dest="redis_url", metavar="URL",
        help="redis://HOST:PORT/N: join the other nodes using this Redis and database as one "
        "service (README \"Running a cluster\")",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="run N server processes on this address and port (Linux SO_REUSEPORT; needs --redis "
        "and --db postgresql://...)",
    )
    parser.add_argument(workers.WORKER_OPTION, type=int, metavar="PID", help=argparse.SUPPRESS)
    parser.add_argument(
        "--tls", action="store_true",
        help="serve https:// and wss:// on the port, with a certificate made for this machine "
        "beside the server key (tls-cert.pem, issued by the server key; its fingerprint is "
        "printed): needed for the web client on other machines",
    )
    parser.add_argument("--tls-cert", type=Path, metavar="PEM",
                        help="serve TLS with this certificate (chain) instead; needs --tls-key")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
        help="event loop: uvloop if installed (auto, the default), or force one",
    )
    parser.add_argument(
        "--registered-only", action="store_true",
        help="refuse guests: only registered users may log in (create accounts with --add-account)",
    )
    parser.add_argument(
        "--no-store", dest="store_messages", action="store_false",
        help="keep no conversation messages: no /history, /search or replay after a reconnect "
        "(for measurements and throwaway servers)",
    )
    parser.add_argument(
        "--reserve", metavar="NAME", action="append", default=[],
        help="a name nobody may use (nor anything that looks like it), besides admin, server, "
        "system and the like; repeat for more",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (default: INFO); message contents are never logged",
    )
    parser.add_argument(
        "--add-account", metavar="NAME",
        help="create the registered account NAME in the database and exit; the password is "
        "asked twice on a terminal, otherwise read from the first line of stdin",
    )
    for option, field, kind, metavar, text in LIMIT_OPTIONS:
        parser.add_argument(
            option, dest=field, type=kind, default=getattr(ServerConfig, field), metavar=metavar,
            help=f"{text} (default: %(default)s)",
        )
    return parser


def load_or_create_key(path: Path | None) -> rsa.RSAPrivateKey:
    """Load the key; generate one on first start when the default path is missing."""
    if path is None and not DEFAULT_PRIVATE_PEM.exists():
        key = generate_private_key(DEFAULT_BITS)
        private_path, public_path = write_key_pair(DEFAULT_PRIVATE_PEM.parent, key)
        print(f"Generated a new server key: {private_path} (keep secret) and {public_path} (for clients)")
        return key
    return load_private_key(path or DEFAULT_PRIVATE_PEM)


def lan_address(host: str) -> str:
    """This machine's address as another machine on the LAN would use it."""
    if host not in WILDCARD_HOSTS:
        return host
    addresses = lan_addresses()
    return addresses[0] if addresses else socket.gethostname()


def connect_hint(host: str, port: int, public_pem: Path) -> str:
    port_option = "" if port == DEFAULT_PORT else f" --port {port}"
    return f"python -m chat.client {lan_address(host)} {public_pem.as_posix()}{port_option}"


def web_client_lines(host: str, port: int, tls: bool) -> list[str]:
    """Where a browser finds the web client: over https the LAN address; over http only
    this machine (browsers give WebCrypto to http pages of localhost only)."""
    if tls:
        return [f"Web client: https://{_url_host(lan_address(host))}:{port}/"]
    local = "localhost" if host in WILDCARD_HOSTS else _url_host(host)
    if not is_loopback(local.lower()):  # listening on one LAN address only
        return [f"Web client: http://{local}:{port}/",
                "(browsers need TLS for this address: start the server with --tls)"]
    return [f"Web client: http://{local}:{port}/",
            "(browsers on other machines need TLS: start the server with --tls)"]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(server: ChatServer, public_pem: Path, tls_fingerprint: str | None = None) -> None:
    process_limits.quiet_accept_errors(asyncio.get_running_loop())
    port = await server.start()
    collector.settle_after_start()
    config = server.config
    scheme = "wss" if config.tls is not None else "ws"
    print(f"WebSocket server started and listening on {scheme}://{config.host}:{port}", flush=True)
    print(f"Server key fingerprint: {fingerprint(server.private_key.public_key())}", flush=True)
    if tls_fingerprint is not None:
        print(f"TLS certificate SHA-256: {tls_fingerprint}", flush=True)
    for line in web_client_lines(config.host, port, config.tls is not None):
        print(line, flush=True)
    hint = connect_hint(config.host, port, public_pem) + (" --tls" if config.tls is not None else "")
    print(f"Clients on the LAN connect with: {hint}", flush=True)  # the last (workers.LAST_START_LINE)
    await server.run_until_stopped()


def tls_files(args: argparse.Namespace, key: rsa.RSAPrivateKey) -> tuple[Path, Path] | None:
    """The certificate and key TLS is served with (made for --tls), or None for none."""
    if args.tls_cert is not None or args.tls_key is not None:
        if args.tls_cert is None or args.tls_key is None:
            raise TlsFileError("--tls-cert and --tls-key go together")
        return args.tls_cert, args.tls_key
    if not args.tls:
        return None
    return made_certificate((args.private_pem or DEFAULT_PRIVATE_PEM).parent, key, args.host)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for, or with ``auto`` when it is installed (``pip install
    'chat[fast]'``); it cuts the server's CPU per message by about a quarter
    (BENCHMARKS.md). None means asyncio's own loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("chat-server: error: --event-loop uvloop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def keep_heap_padded() -> None:
    """On glibc, keep 16 MiB of freed heap instead of returning it at once: relaying file
    chunks otherwise maps and faults in fresh pages for every 256 KiB buffer, which
    BENCHMARKS.md measured at about half the relay's CPU. Elsewhere, nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_TOP_PAD, 16 << 20)
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass  # not glibc


def add_account_command(db_path: str, name: str) -> int:
    try:
        print(add_account(db_path, name))
    except (AddAccountError, OSError, sqlite3.Error, EOFError) as exc:
        print(f"chat-server: error: {exc}", file=sys.stderr)
        return 1
    return 0


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The configuration the command line asks for."""
    chosen = {field: getattr(args, field) for _, field, _, _, _ in LIMIT_OPTIONS}
    return ServerConfig(
        host=args.host, port=args.port, db_path=args.db_path, redis_url=args.redis_url,
        workers=args.workers, reserved_names=frozenset(args.reserve),
        registered_only=args.registered_only, store_messages=args.store_messages, **chosen
    )


def refusal(config: ServerConfig) -> str | None:
    """Why these options cannot work together, or None."""
    if config.redis_url is not None and not is_postgres_url(config.db_path):
        return ("--redis needs --db postgresql://...: the nodes of a cluster share one database "
                "(an SQLite file is one process's own)")
    if not 0 <= config.ticket_lifetime <= MAX_TICKET_LIFETIME:
        return f"--ticket-lifetime must be 0 to {MAX_TICKET_LIFETIME} seconds (7 days)"
    return workers.refusal(config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.add_account is not None:
        return add_account_command(args.db_path, args.add_account)
    config = config_from_args(args)
    problem = refusal(config)
    if problem is not None:
        print(f"chat-server: error: {problem}", file=sys.stderr)
        return 2
    if args.worker_of is not None:
        workers.become_worker(args.worker_of)
        config.reuse_port = True
    keep_heap_padded()
    logs.configure(args.log_level)
    try:
        key = load_or_create_key(args.private_pem)
    except (KeyFileError, OSError) as exc:
        print(f"chat-server: error: {exc}", file=sys.stderr)
        return 2
    try:
        files = tls_files(args, key)
        config.tls, tls_fingerprint = server_context(*files) if files else (None, None)
    except (TlsFileError, OSError) as exc:
        print(f"chat-server: error: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1:
        given = None if args.private_pem is not None else str(DEFAULT_PRIVATE_PEM)
        return workers.supervise(argv, given, config)
    public_pem = (args.private_pem or DEFAULT_PRIVATE_PEM).parent / PUBLIC_NAME
    config.max_connections = process_limits.fit_descriptors(config.max_connections)
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
            runner.run(serve(ChatServer(key, config), public_pem, tls_fingerprint))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"chat-server: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
