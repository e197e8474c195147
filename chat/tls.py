"""TLS for the server's port (README "Web client and TLS"): the certificate
``chat-server --tls`` makes, and how a client decides to accept a certificate.

The certificate made by ``--tls`` has a key of its own (EC P-256, ``tls-key.pem``, 0600)
and is **issued by the server's RSA key**: the server key signs it, as a private
certificate authority of one. A client that has pinned the server key (its public.pem,
``known_servers``) can therefore check the certificate with nothing more, and a browser
sees an unknown issuer whose SHA-256 fingerprint the server prints at start. A
certificate of a public authority (``--tls-cert``/``--tls-key``) is checked against the
system's trust store instead, and any certificate may be pinned by its fingerprint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chat.keys import fingerprint

CERT_NAME = "tls-cert.pem"
KEY_NAME = "tls-key.pem"
#: Days a made certificate is valid; a new one is made when less than RENEW_DAYS remain.
VALID_DAYS = 825
RENEW_DAYS = 30


class TlsFileError(Exception):
    """A certificate or its key is missing, unreadable, malformed or mismatched."""


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER, as browsers show it: ``AB:CD:...``."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def normal_cert_fingerprint(text: str) -> str:
    """``text`` (hex, any case, with or without colons or spaces) in cert_fingerprint's form;
    ValueError if it is not 32 bytes of hex."""
    digits = "".join(c for c in text.removeprefix("SHA256:").removeprefix("sha256:") if c not in ": ")
    raw = bytes.fromhex(digits)
    if len(raw) != 32:
        raise ValueError("a SHA-256 fingerprint is 32 bytes (64 hex digits)")
    return ":".join(f"{b:02X}" for b in raw)


#: Addresses outside any LAN (documentation ranges): a UDP socket "connected" to one
#: sends nothing but learns the address of the interface its route leaves by.
ROUTE_PROBES = ((socket.AF_INET, "203.0.113.1"), (socket.AF_INET6, "2001:db8::1"))


def lan_addresses() -> list[str]:
    """This machine's addresses as other machines on its networks reach it, IPv4 first:
    those its host name resolves to, and those of its routes out (a host name often
    resolves to 127.0.0.1 only). Loopback and link-local addresses are left out."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    for family, target in ROUTE_PROBES:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                found.append(str(probe.getsockname()[0]))
        except OSError:
            continue
    usable: list[str] = []
    for address in found:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified) and address not in usable:
            usable.append(address)
    return sorted(usable, key=lambda a: ":" in a)


def names_for(host: str) -> tuple[list[str], list[str]]:
    """The DNS names and IP addresses a certificate for this machine should name."""
    dns = ["localhost"]
    ips = ["127.0.0.1", "::1"]
    hostname = socket.gethostname()
    if hostname and hostname not in dns:
        dns.append(hostname)
    ips += [a for a in lan_addresses() if a not in ips]
    if host not in ("", "0.0.0.0", "::"):
        try:
            ipaddress.ip_address(host)
            if host not in ips:
                ips.append(host)
        except ValueError:
            if host not in dns:
                dns.append(host)
    return dns, ips


def make_certificate(
    server_key: rsa.RSAPrivateKey, host: str, keep: tuple[list[str], list[str]] = ([], [])
) -> tuple[bytes, bytes]:
    """A new TLS key and certificate for this machine, issued by ``server_key``:
    (certificate PEM, key PEM). It also names ``keep`` (DNS names, IP addresses): those
    of the certificate it replaces."""
    tls_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chat"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"key {fingerprint(server_key.public_key())[7:]}"),
    ])  # fmt: skip
    dns, ips = names_for(host)
    dns += [n for n in keep[0] if n not in dns]
    ips += [a for a in keep[1] if a not in ips]
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chat"),
        x509.NameAttribute(NameOID.COMMON_NAME, dns[1] if len(dns) > 1 else dns[0]),
    ])  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(server_key, hashes.SHA256())
    )
    key_pem = tls_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def made_certificate(directory: Path, server_key: rsa.RSAPrivateKey, host: str) -> tuple[Path, Path]:
    """The certificate ``--tls`` uses, beside the server key: made if missing, issued by
    another key, near its end, or missing one of this machine's names or addresses (a new
    LAN address: browsers check the name), keeping the names it had; otherwise the one
    made before (its fingerprint stays)."""
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    keep: tuple[list[str], list[str]] = ([], [])
    if cert_path.exists() and key_path.exists():
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            remaining = certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)
            if issued_by(certificate, server_key.public_key()) and remaining > dt.timedelta(days=RENEW_DAYS):
                keep = certificate_names(certificate)
                dns, ips = names_for(host)
                if set(dns) <= set(keep[0]) and set(ips) <= set(keep[1]):
                    return cert_path, key_path
        except (OSError, ValueError, x509.ExtensionNotFound):
            pass
    cert_pem, key_pem = make_certificate(server_key, host, keep)
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert_pem, mode=0o644)
    return cert_path, key_path


def certificate_names(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """The DNS names and IP addresses (as text) a certificate names."""
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    return list(names.get_values_for_type(x509.DNSName)), ips


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a new file of ``mode`` and move it over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def server_context(cert_path: Path, key_path: Path) -> tuple[ssl.SSLContext, str]:
    """The server's TLS context and the certificate's fingerprint; TlsFileError with one
    clear line when a file is missing, unreadable or the two do not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    except OSError as exc:
        raise TlsFileError(f"cannot read the certificate {cert_path}: {exc.strerror or exc}") from None
    except ValueError:
        raise TlsFileError(f"{cert_path} is not a PEM certificate") from None
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError:  # before OSError, of which it is one
        raise TlsFileError(f"{key_path} is not the private key of {cert_path}") from None
    except OSError as exc:
        raise TlsFileError(f"cannot read the key {key_path}: {exc.strerror or exc}") from None
    return context, cert_fingerprint(der)


def issued_by(certificate: x509.Certificate, server_key: rsa.RSAPublicKey) -> bool:
    """Whether ``server_key`` signed ``certificate`` (the certificate ``--tls`` makes)."""
    algorithm = certificate.signature_hash_algorithm
    if algorithm is None:
        return False
    try:
        signed = certificate.tbs_certificate_bytes
        server_key.verify(certificate.signature, signed, padding.PKCS1v15(), algorithm)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def accepted(der: bytes, server_key: rsa.RSAPublicKey | None, pinned: str | None) -> bool:
    """Whether a certificate the system's store did not vouch for may be used: it is the
    one pinned by fingerprint, or it was issued by the server's pinned key."""
    if pinned is not None:
        return cert_fingerprint(der) == normal_cert_fingerprint(pinned)
    if server_key is None:
        return False
    try:
        return issued_by(x509.load_der_x509_certificate(der), server_key)
    except ValueError:
        return False

