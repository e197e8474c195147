"""The names in the certificate ``chat-server --tls`` makes (README "Web client and TLS"):
this machine's names and LAN addresses, the address the start lines print among them, and
a certificate made again, keeping its names, when this machine has a name it lacks."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import stat
import time
from pathlib import Path

from cryptography import x509
from e2e_harness import HOST, ServerProcess

from chat.keys import generate_private_key
from chat.server.__main__ import lan_address, web_client_lines
from chat.tls import CERT_NAME, KEY_NAME, certificate_names, issued_by, lan_addresses, made_certificate


def names_in(directory: Path) -> tuple[list[str], list[str]]:
    return certificate_names(x509.load_pem_x509_certificate((directory / CERT_NAME).read_bytes()))


def test_lan_addresses_are_this_machines_and_the_certificate_names_them(tmp_path: Path) -> None:
    addresses = lan_addresses()
    for address in addresses:
        ip = ipaddress.ip_address(address)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified), address
        with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET) as bound:
            bound.bind((address, 0))  # an address of this machine
    assert addresses == sorted(addresses, key=lambda a: ":" in a)  # IPv4 first
    key = generate_private_key(2048)
    made_certificate(tmp_path, key, "0.0.0.0")
    assert stat.S_IMODE((tmp_path / KEY_NAME).stat().st_mode) == 0o600
    dns, ips = names_in(tmp_path)
    assert dns[:2] == ["localhost", socket.gethostname()]
    assert ips == ["127.0.0.1", "::1", *addresses]
    # The start lines send browsers to an address the certificate names.
    lan = lan_address("0.0.0.0")
    assert lan in (addresses[:1] or [socket.gethostname()])
    assert lan in dns + ips
    host = f"[{lan}]" if ":" in lan else lan
    assert web_client_lines("0.0.0.0", 8767, True) == [f"Web client: https://{host}:8767/"]


def test_a_certificate_lacking_a_name_is_made_again_with_its_old_names(tmp_path: Path) -> None:
    key = generate_private_key(2048)
    made_certificate(tmp_path, key, "10.9.8.7")  # --host 10.9.8.7
    first = (tmp_path / CERT_NAME).read_bytes()
    assert "10.9.8.7" in names_in(tmp_path)[1]
    made_certificate(tmp_path, key, "0.0.0.0")  # every name it needs is there: kept
    assert (tmp_path / CERT_NAME).read_bytes() == first
    made_certificate(tmp_path, key, "chat.example")  # a name it lacks: made again
    second = (tmp_path / CERT_NAME).read_bytes()
    assert second != first
    dns, ips = names_in(tmp_path)
    assert "chat.example" in dns and "10.9.8.7" in ips  # the old names kept
    assert issued_by(x509.load_pem_x509_certificate(second), key.public_key())
    assert stat.S_IMODE((tmp_path / KEY_NAME).stat().st_mode) == 0o600
    made_certificate(tmp_path, key, "10.9.8.7")  # no flip-flop between the two
    made_certificate(tmp_path, key, "chat.example")
    assert (tmp_path / CERT_NAME).read_bytes() == second


async def test_a_connection_that_never_starts_tls_is_closed_in_the_upgrade_time(
    own_private_pem: Path, tmp_path: Path
) -> None:
    """The TLS handshake counts as part of the upgrade: a peer that connects and says
    nothing (or sends plain HTTP) does not hold the connection beyond --upgrade-timeout,
    and the port keeps serving TLS meanwhile."""
    options = ("--tls", "--upgrade-timeout", "1")
    server = await ServerProcess.start(own_private_pem, tmp_path / "run", *options)
    try:
        silent = [await asyncio.open_connection(HOST, server.port) for _ in range(20)]
        started = time.monotonic()
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(HOST, server.port, ssl=context)
        writer.write(f"GET /server-key.pem HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
        for silent_reader, silent_writer in silent:
            assert await asyncio.wait_for(silent_reader.read(), 5) == b""  # closed by the server
            silent_writer.close()
        assert time.monotonic() - started < 4
    finally:
        assert await server.stop() == []
