"""The server's RSA key pair on disk: create, write safely, load, fingerprint.

Fingerprints are SHA-256 of the DER SubjectPublicKeyInfo, shown like SSH's:
``SHA256:`` followed by unpadded base64.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_BITS = 3072
MIN_BITS = 2048
MAX_BITS = 8192
PRIVATE_NAME = "private.pem"
PUBLIC_NAME = "public.pem"


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or not an RSA key."""


def generate_private_key(bits: int = DEFAULT_BITS) -> rsa.RSAPrivateKey:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"--bits must be between {MIN_BITS} and {MAX_BITS}, got {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def spki_der(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint_bytes(public_key: rsa.RSAPublicKey) -> bytes:
    """The raw 32-byte fingerprint, as carried in the ClientHello."""
    return hashlib.sha256(spki_der(public_key)).digest()


def format_fingerprint(digest: bytes) -> str:
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint(public_key: rsa.RSAPublicKey) -> str:
    return format_fingerprint(fingerprint_bytes(public_key))


def private_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write ``data`` to ``path`` created with ``mode`` from the start (no window
    in which a private key is readable by others)."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)
    if overwrite:
        # Remove first so the new file is created with ``mode`` even if the
        # old one had looser permissions.
        path.unlink(missing_ok=True)
    flags |= os.O_EXCL
    fd = os.open(path, flags, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if hasattr(os, "chmod"):
        os.chmod(path, mode)


def write_key_pair(
    directory: Path, private_key: rsa.RSAPrivateKey, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``private.pem`` (PKCS#8, mode 0600) and ``public.pem`` (SPKI).

    Raises FileExistsError if either exists and ``overwrite`` is false.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new key directory is private
    private_path = directory / PRIVATE_NAME
    public_path = directory / PUBLIC_NAME
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise FileExistsError(str(path))
    _write_new(private_path, private_pem(private_key), 0o600, overwrite)
    _write_new(public_path, public_pem(private_key.public_key()), 0o644, overwrite)
    return private_path, public_path


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path} is not an RSA private key")
    if not MIN_BITS <= key.key_size <= MAX_BITS:
        raise KeyFileError(f"{path}: RSA key size {key.key_size} is outside {MIN_BITS}..{MAX_BITS}")
    return key


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror or exc}") from None
    return parse_public_key(data, str(path))


def parse_public_key(data: bytes, source: str = "public key") -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source} is not a PEM public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"{source} is not an RSA public key")
    if not MIN_BITS <= key.key_size <= MAX_BITS:
        raise KeyFileError(f"{source}: RSA key size {key.key_size} is outside {MIN_BITS}..{MAX_BITS}")
    return key
