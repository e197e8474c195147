"""``python rsa_tool.py`` / ``chat.keygen.main``: files, modes, formats, fingerprint, refusals.

Most tests run the real script in a subprocess from the repository root, as a user would.
The fingerprint is recomputed here from the PEM text with hashlib/base64 only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chat.keygen import main

REPO = Path(__file__).resolve().parent.parent
FAST = ["--bits", "2048"]


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "rsa_tool.py", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pem_body(pem: bytes, label: str) -> bytes:
    """The DER inside a PEM block, decoded by hand (no crypto library)."""
    text = pem.decode("ascii")
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    assert text.startswith(begin + "\n"), text[:40]
    assert text.rstrip("\n").endswith(end)
    return base64.b64decode("".join(text.strip().splitlines()[1:-1]), validate=True)


def ssh_fingerprint(public_pem: bytes) -> str:
    digest = hashlib.sha256(pem_body(public_pem, "PUBLIC KEY")).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def printed_fingerprint(stdout: str) -> str:
    match = re.fullmatch(r"Fingerprint: (SHA256:[A-Za-z0-9+/]{43})", stdout.splitlines()[-1])
    assert match, stdout
    return match.group(1)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rsa_tool: error: ")
    return lines[0]


def check_key_pair(directory: Path, bits: int) -> rsa.RSAPrivateKey:
    private_path, public_path = directory / "private.pem", directory / "public.pem"
    if os.name != "nt":
        assert private_path.stat().st_mode & 0o777 == 0o600
    private_bytes, public_bytes = private_path.read_bytes(), public_path.read_bytes()
    pem_body(private_bytes, "PRIVATE KEY")  # PKCS#8, unencrypted (not "ENCRYPTED PRIVATE KEY")
    pem_body(public_bytes, "PUBLIC KEY")  # SubjectPublicKeyInfo (not "RSA PUBLIC KEY")
    private_key = serialization.load_pem_private_key(private_bytes, password=None)
    public_key = serialization.load_pem_public_key(public_bytes)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert private_key.key_size == bits
    assert private_key.public_key().public_numbers() == public_key.public_numbers()
    return private_key


def test_writes_key_pair_and_prints_paths_and_fingerprint(tmp_path: Path) -> None:
    keys = tmp_path / "new" / "keys"  # parents are created too
    result = run_tool("--dir", keys, *FAST)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_key_pair(keys, 2048)
    private_path, public_path = keys / "private.pem", keys / "public.pem"
    assert result.stdout.splitlines()[0] == (
        f"Wrote {private_path} (private, keep secret) and {public_path} (give this to clients)."
    )
    assert printed_fingerprint(result.stdout) == ssh_fingerprint((keys / "public.pem").read_bytes())


def test_default_size_is_3072(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path)]) == 0
    check_key_pair(tmp_path, 3072)
    out = capsys.readouterr().out
    assert printed_fingerprint(out) == ssh_fingerprint((tmp_path / "public.pem").read_bytes())


def test_existing_key_is_kept_without_force_and_replaced_with_it(tmp_path: Path) -> None:
    assert run_tool("--dir", tmp_path, *FAST).returncode == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("private.pem", "public.pem")}
    old_fingerprint = ssh_fingerprint(before["public.pem"])

    line = assert_one_line_error(run_tool("--dir", tmp_path, *FAST), 1)
    assert str(tmp_path / "private.pem") in line
    assert "--force" in line
    assert {name: (tmp_path / name).read_bytes() for name in before} == before

    result = run_tool("--dir", tmp_path, "--force", *FAST)
    assert result.returncode == 0, result.stderr
    check_key_pair(tmp_path, 2048)
    new_fingerprint = ssh_fingerprint((tmp_path / "public.pem").read_bytes())
    assert printed_fingerprint(result.stdout) == new_fingerprint != old_fingerprint


def test_existing_public_key_alone_also_blocks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "public.pem").write_bytes(b"someone's key\n")
    assert main(["--dir", str(tmp_path), *FAST]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rsa_tool: error: ") and str(tmp_path / "public.pem") in err
    assert not (tmp_path / "private.pem").exists()
    assert (tmp_path / "public.pem").read_bytes() == b"someone's key\n"


@pytest.mark.parametrize("bits", ["1024", "9000", "2047", "8193", "abc", ""])
def test_bad_bits_rejected_and_nothing_created(tmp_path: Path, bits: str) -> None:
    keys = tmp_path / "keys"
    line = assert_one_line_error(run_tool("--dir", keys, "--bits", bits), 2)
    assert "--bits" in line and "2048" in line and "8192" in line
    assert not keys.exists()


def test_uncreatable_directory(tmp_path: Path) -> None:
    # A directory under a regular file cannot be created, even by root.
    (tmp_path / "afile").write_text("not a directory\n")
    keys = tmp_path / "afile" / "keys"
    line = assert_one_line_error(run_tool("--dir", keys, *FAST), 1)
    assert str(keys) in line
    if os.name != "nt":
        assert "Not a directory" in line


def test_directory_is_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("")
    assert main(["--dir", str(tmp_path / "afile"), *FAST]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    expected = f"cannot create directory {tmp_path / 'afile'}: it exists and is not a directory"
    assert err == f"rsa_tool: error: {expected}\n"


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    line = assert_one_line_error(run_tool("--dir", tmp_path, "--frobnicate"), 2)
    assert "--frobnicate" in line
    assert list(tmp_path.iterdir()) == []
