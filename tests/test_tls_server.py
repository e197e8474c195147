"""The server's TLS (README "Web client and TLS"): the certificate ``--tls`` makes beside
the server key (issued by it, kept, its fingerprint printed), a certificate given with
``--tls-cert``/``--tls-key``, and the clear errors for files that cannot work."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2e_harness import HOST, ServerProcess

from chat.keys import generate_private_key, load_private_key, write_key_pair
from chat.tls import CERT_NAME, KEY_NAME, accepted, cert_fingerprint, issued_by


async def peer_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.write(f"GET /server-key.pem HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:100]
    return bytes(der)


async def printed_fingerprint(server: ServerProcess) -> str:
    """The fingerprint the server printed, once all its start lines are in."""
    last = await server.out.wait_for(lambda s: s.startswith("Clients on the LAN connect with: "), 15)
    assert last is not None, server.report()
    lines = [line for line in server.out.lines if line.startswith("TLS certificate SHA-256: ")]
    assert len(lines) == 1, server.report()
    return lines[0].removeprefix("TLS certificate SHA-256: ")


async def test_tls_makes_a_certificate_issued_by_the_server_key_and_keeps_it(
    own_private_pem: Path, tmp_path: Path
) -> None:
    private_pem = own_private_pem
    server_key = load_private_key(private_pem).public_key()
    server = await ServerProcess.start(private_pem, tmp_path / "run", "--tls")
    try:
        cert_path, key_path = private_pem.with_name(CERT_NAME), private_pem.with_name(KEY_NAME)
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert issued_by(certificate, server_key)
        assert not issued_by(certificate, generate_private_key(2048).public_key())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
        der = await peer_certificate(server.port)
        assert der == certificate.public_bytes(serialization.Encoding.DER)
        assert await printed_fingerprint(server) == cert_fingerprint(der)
        assert accepted(der, server_key, None) and accepted(der, None, cert_fingerprint(der))
        assert not accepted(der, None, None) and not accepted(der, None, "00" * 32)
        assert f"WebSocket server started and listening on wss://{HOST}:{server.port}" in server.out.lines
        assert server.out.lines[-1].endswith(" --tls")  # the connect hint
    finally:
        assert await server.stop() == []
    again = await ServerProcess.start(private_pem, tmp_path / "run", "--tls")
    try:
        assert await printed_fingerprint(again) == cert_fingerprint(der)  # the same certificate
    finally:
        assert await again.stop() == []
    write_key_pair(private_pem.parent, generate_private_key(2048), overwrite=True)  # a new server key
    renewed = await ServerProcess.start(private_pem, tmp_path / "run", "--tls")
    try:
        assert await printed_fingerprint(renewed) != cert_fingerprint(der)
        new = x509.load_pem_x509_certificate(private_pem.with_name(CERT_NAME).read_bytes())
        assert issued_by(new, load_private_key(private_pem).public_key())
    finally:
        assert await renewed.stop() == []


def other_certificate(directory: Path) -> tuple[Path, Path, bytes]:
    """A certificate of another issuer (self-signed) and its key, as files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path, certificate.public_bytes(serialization.Encoding.DER)


async def test_a_given_certificate_is_served_as_it_is(key_pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert_path, key_path, der = other_certificate(tmp_path / "given")
    server = await ServerProcess.start(key_pair[0], tmp_path / "run", "--tls-cert", str(cert_path),
                                       "--tls-key", str(key_path))  # fmt: skip
    try:
        assert await peer_certificate(server.port) == der
        assert await printed_fingerprint(server) == cert_fingerprint(der)
        assert not accepted(der, load_private_key(key_pair[0]).public_key(), None)
    finally:
        assert await server.stop() == []


def refused(key_pair: tuple[Path, Path], cwd: Path, *options: str) -> str:
    """Start a server that must refuse to start: exit 2 and one line on stderr."""
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "chat.server", str(key_pair[0]), "--host", HOST, "--port", "0", *options],
        cwd=cwd, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


def test_certificate_files_that_cannot_work_are_refused_clearly(
    key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    cert_path, key_path, _ = other_certificate(tmp_path / "given")
    _, other_key, _ = other_certificate(tmp_path / "other")
    cwd = tmp_path / "run"
    assert refused(key_pair, cwd, "--tls-cert", str(cert_path)) == (
        "chat-server: error: --tls-cert and --tls-key go together")
    assert refused(key_pair, cwd, "--tls-cert", str(cert_path), "--tls-key", str(other_key)) == (
        f"chat-server: error: {other_key} is not the private key of {cert_path}")
    missing = tmp_path / "missing.pem"
    assert refused(key_pair, cwd, "--tls-cert", str(missing), "--tls-key", str(key_path)) == (
        f"chat-server: error: cannot read the certificate {missing}: No such file or directory")
    assert refused(key_pair, cwd, "--tls-cert", str(key_path), "--tls-key", str(key_path)) == (
        f"chat-server: error: {key_path} is not a PEM certificate")


async def test_plain_http_to_a_tls_port_gets_nothing_and_harms_nothing(
    own_private_pem: Path, tmp_path: Path
) -> None:
    server = await ServerProcess.start(own_private_pem, tmp_path / "run", "--tls")
    try:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(f"GET /server-key.pem HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert not answer.startswith(b"HTTP/1.1 200")
        await peer_certificate(server.port)  # still serving
    finally:
        assert await server.stop() == []
