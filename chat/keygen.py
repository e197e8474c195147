"""Create the server's RSA key pair: ``python rsa_tool.py`` or the ``chat-keygen`` script.

Writes DIR/private.pem (PKCS#8, unencrypted, mode 0600) and DIR/public.pem (SPKI) and
prints the key's fingerprint. An existing key is never overwritten without ``--force``.
Every error is one line on stderr starting with ``rsa_tool: error: ``; exit codes are
0 on success, 1 for a file-system problem (existing key, unwritable directory) and 2 for
a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from chat.keys import (
    DEFAULT_BITS,
    MAX_BITS,
    MIN_BITS,
    PRIVATE_NAME,
    PUBLIC_NAME,
    fingerprint,
    generate_private_key,
    write_key_pair,
)

PROG = "rsa_tool"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _bits(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer between {MIN_BITS} and {MAX_BITS}, got {text!r}"
        ) from None
    if not MIN_BITS <= bits <= MAX_BITS:
        raise argparse.ArgumentTypeError(f"must be between {MIN_BITS} and {MAX_BITS}, got {bits}")
    return bits


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Create the chat server's RSA key pair; print its fingerprint.")
    parser.add_argument("--dir", default="keys", metavar="DIR", help="key directory (default: keys)")
    parser.add_argument(
        "--bits",
        type=_bits,
        default=DEFAULT_BITS,
        metavar="N",
        help=f"RSA key size, {MIN_BITS}..{MAX_BITS} (default: {DEFAULT_BITS})",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _exists_message(path: Path) -> str:
    return f"{path} already exists; use --force to overwrite it"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    directory = Path(args.dir)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME

    # Check everything that can fail before spending seconds on key generation.
    if directory.exists() and not directory.is_dir():
        return _fail(f"cannot create directory {directory}: it exists and is not a directory")
    if not args.force:
        for path in (private_path, public_path):
            if path.exists():
                return _fail(_exists_message(path))
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create directory {directory}: {exc.strerror or exc}")

    key = generate_private_key(args.bits)
    try:
        write_key_pair(directory, key, overwrite=args.force)
    except FileExistsError as exc:  # created by someone else since the check above
        return _fail(_exists_message(Path(exc.filename or str(exc))))
    except OSError as exc:
        return _fail(f"cannot write the key pair to {directory}: {exc.strerror or exc}")

    print(f"Wrote {private_path} (private, keep secret) and {public_path} (give this to clients).")
    print(f"Fingerprint: {fingerprint(key.public_key())}")
    return 0
