"""The terminal client over TLS (README "Connect a client"): ``--tls`` connects with
wss:// (and fetches the key for trust on first use over https://), ``--tls-fingerprint``
pins a certificate of another origin. A certificate is accepted if the system's store
vouches for it, or if it was issued by the server key the client trusts, or if it is the
pinned one; anything else is refused with exit 4. A wrong ``--tls`` choice is named as
such (exit 3). Real servers started with ``--tls`` or ``--tls-cert``/``--tls-key``."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2e_harness import HOST, USERNAME_PROMPT, LineClient, ServerProcess
from test_terminal_support import Terminal
from test_tofu import line_client

from chat.client.known_servers import FILE_NAME
from chat.client.options import build_parser, tls_fingerprint
from chat.client.tls_layer import TlsChoice, refused_certificate, tls_choice
from chat.keys import fingerprint, generate_private_key, load_private_key, load_public_key
from chat.tls import CERT_NAME, cert_fingerprint, make_certificate

EXIT_CANNOT_CONNECT, EXIT_BAD_SERVER_KEY = 3, 4
Start = Callable[..., Awaitable[ServerProcess]]


def events(out: str) -> list[str]:
    """The client's lines, without the username prompt (printed without a newline)."""
    return out.replace(USERNAME_PROMPT, "").splitlines()


def pins(config_dir: Path) -> list[list[str]]:
    path = config_dir / FILE_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.split()[:2] for line in lines]


def tls_files(directory: Path, cert_pem: bytes, key_pem: bytes) -> list[str]:
    """The server's options serving this certificate and key."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    (directory / "key.pem").chmod(0o600)
    return ["--tls-cert", str(directory / "cert.pem"), "--tls-key", str(directory / "key.pem")]


def self_signed(common_name: str = "chat.example") -> tuple[bytes, bytes]:
    """A certificate of another origin (as mkcert or a company's authority would make):
    issued by nobody this client knows."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def der_of(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


async def tls_client(server: ServerProcess, public_pem: Path, cwd: Path, *options: str) -> LineClient:
    cwd.mkdir(parents=True, exist_ok=True)
    args = ["-m", "chat.client", HOST, str(public_pem), "--port", str(server.port), *options]
    client = await LineClient.spawn(cwd.name, args, cwd, split_prompts=True)
    assert isinstance(client, LineClient)
    client.server, client.cwd = server, cwd
    return client


async def test_login_and_private_messages_both_ways_over_wss(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await start_server(own_private_pem, "--tls")
    assert f"WebSocket server started and listening on wss://{HOST}:{server.port}" in server.out.lines
    alice = await tls_client(server, key_pair[1], tmp_path / "alice", "--tls")
    bob = await tls_client(server, key_pair[1], tmp_path / "bob", "--tls")
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            await client.expect(USERNAME_PROMPT)
            client.send(name)
            await client.expect(f"[Welcome {name}]")
        alice.send("/msg bob hello over TLS")
        await bob.expect("Private message from alice: hello over TLS")
        bob.send("/msg alice and back")
        await alice.expect("Private message from bob: and back")
        await alice.close()
        await bob.close()
    finally:
        await alice.terminate()
        await bob.terminate()


async def test_trust_on_first_use_over_https(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await start_server(own_private_pem, "--tls")
    base = [HOST, "--port", str(server.port), "--tls"]
    key = fingerprint(load_public_key(key_pair[1]))
    where = f"{HOST}:{server.port}"

    # Line mode refuses an unknown key as without TLS...
    config = tmp_path / "config-a"
    code, out, err = await line_client(base, cwd=tmp_path / "a", config_dir=config, stdin="ann\n")
    assert code == EXIT_BAD_SERVER_KEY, err
    assert f"The server at {where} is not known yet (its key fingerprint is {key})" in err
    assert pins(config) == []
    # ... accepts it with --accept-new-key, pins it, and the next run uses the pin.
    code, out, err = await line_client([*base, "--accept-new-key"], cwd=tmp_path / "a", config_dir=config,
                                      stdin="ann\n/quit\n")  # fmt: skip
    assert code == 0, err
    assert "[Welcome ann]" in events(out)
    assert f"Pinned the key {key} of {where}" in err
    assert pins(config) == [[where, key]]
    code, out, err = await line_client(base, cwd=tmp_path / "a", config_dir=config, stdin="ann\n/quit\n")
    assert code == 0, err
    assert "[Welcome ann]" in events(out)

    # --fingerprint given out of band.
    config = tmp_path / "config-b"
    code, out, err = await line_client([*base, "--fingerprint", key], cwd=tmp_path / "b", config_dir=config,
                                      stdin="ben\n/quit\n")  # fmt: skip
    assert code == 0, err
    assert "[Welcome ben]" in events(out)
    assert pins(config) == [[where, key]]
    # The certificate was the one --tls made, issued by that key.
    assert (own_private_pem.parent / CERT_NAME).exists()


async def test_a_certificate_issued_by_another_key_is_refused(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    # Someone between client and server with a certificate made by chat-server --tls for
    # another key: the real server key cannot vouch for it.
    cert_pem, key_pem = make_certificate(generate_private_key(2048), HOST)
    server = await start_server(own_private_pem, *tls_files(tmp_path / "tls", cert_pem, key_pem))
    seen = cert_fingerprint(der_of(cert_pem))
    where = f"{HOST}:{server.port}"
    expected = (
        f"The TLS certificate of {where} (SHA-256 {seen}) was not issued by the server key this client "
        "trusts, and no public authority vouches for it: refusing to connect. If you have checked that "
        f"fingerprint with the server's owner, rerun with --tls-fingerprint {seen}; otherwise ask the "
        "server's owner."
    )
    config = tmp_path / "config"
    base = [HOST, "--port", str(server.port), "--tls"]
    # With the key file, and on first use (nothing is asked or pinned).
    for args in ([HOST, str(key_pair[1]), *base[1:]], [*base, "--accept-new-key"]):
        code, out, err = await line_client(args, cwd=tmp_path / "c", config_dir=config, stdin="cid\n")
        assert code == EXIT_BAD_SERVER_KEY, err
        assert err.splitlines() == [expected]
        assert "Welcome" not in out
    assert pins(config) == []
    # A wrong --tls-fingerprint is refused too, naming both.
    wrong = cert_fingerprint(b"another certificate")
    code, out, err = await line_client([HOST, str(key_pair[1]), *base[1:], "--tls-fingerprint", wrong],
                                      cwd=tmp_path / "c", config_dir=config, stdin="cid\n")  # fmt: skip
    assert code == EXIT_BAD_SERVER_KEY, err
    assert err.splitlines() == [
        f"The TLS certificate of {where} has the SHA-256 fingerprint {seen}, not {wrong} as given with "
        "--tls-fingerprint: refusing to connect. If the server's certificate really changed, ask the "
        "server's owner for its new fingerprint."
    ]


async def test_tls_fingerprint_accepts_a_certificate_of_another_issuer(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    cert_pem, key_pem = self_signed()
    server = await start_server(own_private_pem, *tls_files(tmp_path / "tls", cert_pem, key_pem))
    seen = cert_fingerprint(der_of(cert_pem))
    # In the form a browser shows, or plain lower-case hex: --tls-fingerprint implies --tls.
    for pin in (seen, seen.replace(":", "").lower()):
        code, out, err = await line_client(
            [HOST, str(key_pair[1]), "--port", str(server.port), "--tls-fingerprint", pin],
            cwd=tmp_path / "d",
            config_dir=tmp_path / "config",
            stdin="dee\n/quit\n",
        )
        assert code == 0, err
        assert "[Welcome dee]" in events(out)
    # Trust on first use with it: the key fetched over https, then pinned.
    config = tmp_path / "config-tofu"
    code, out, err = await line_client(
        [HOST, "--port", str(server.port), "--tls-fingerprint", seen, "--accept-new-key"],
        cwd=tmp_path / "e",
        config_dir=config,
        stdin="eve\n/quit\n",
    )
    assert code == 0, err
    assert "[Welcome eve]" in events(out)
    assert pins(config) == [[f"{HOST}:{server.port}", fingerprint(load_public_key(key_pair[1]))]]
    # Without the pin, neither the server key nor a public authority vouches for it.
    code, out, err = await line_client([HOST, str(key_pair[1]), "--port", str(server.port), "--tls"],
                                      cwd=tmp_path / "d", config_dir=config, stdin="dee\n")  # fmt: skip
    assert code == EXIT_BAD_SERVER_KEY
    assert f"--tls-fingerprint {seen};" in err


async def test_a_certificate_the_system_store_vouches_for_is_accepted(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """A public authority's certificate, with the authority in the trust store OpenSSL
    reads (``SSL_CERT_FILE``): accepted with no pin, though the server key did not issue it."""
    cert_pem, key_pem = self_signed("127.0.0.1")
    server = await start_server(own_private_pem, *tls_files(tmp_path / "tls", cert_pem, key_pem))
    store = tmp_path / "store.pem"
    store.write_bytes(cert_pem)
    for args in ([HOST, str(key_pair[1])], [HOST, "--accept-new-key"]):
        code, out, err = await line_client(
            [*args, "--port", str(server.port), "--tls"], cwd=tmp_path / "f", config_dir=tmp_path / "config",
            stdin="fay\n/quit\n", extra_env={"SSL_CERT_FILE": str(store)},
        )  # fmt: skip
        assert code == 0, err
        assert "[Welcome fay]" in events(out)


async def test_the_wrong_tls_choice_is_named(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    tls = await start_server(own_private_pem, "--tls")
    plain = await start_server(own_private_pem)
    config = tmp_path / "config"
    add = (f"Cannot connect to the server at ws://{HOST}:{tls.port}: the server speaks TLS "
           "(https://, wss://); add --tls.")  # fmt: skip
    drop = (f"Cannot connect to the server at wss://{HOST}:{plain.port}: the server does not speak TLS; "
            "drop --tls.")  # fmt: skip
    cases = [
        ([HOST, str(key_pair[1]), "--port", str(tls.port)], add),
        ([HOST, "--port", str(tls.port), "--accept-new-key"], add),
        ([HOST, str(key_pair[1]), "--port", str(plain.port), "--tls"], drop),
        ([HOST, "--port", str(plain.port), "--tls", "--accept-new-key"], drop),
        (
            [HOST, str(key_pair[1]), "--port", str(plain.port), "--tls-fingerprint", "00" * 32],
            drop.replace("drop --tls.", "drop --tls and --tls-fingerprint."),
        ),
    ]
    for args, line in cases:
        code, out, err = await line_client(args, cwd=tmp_path / "g", config_dir=config, stdin="gus\n")
        assert (code, err.splitlines()) == (EXIT_CANNOT_CONNECT, [line]), args
        assert out == ""
    assert pins(config) == []


async def test_reconnect_keeps_tls(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    server = await start_server(own_private_pem, "--tls")
    options = ("--tls", "--reconnect", "--username", "hal")
    client = await tls_client(server, key_pair[1], tmp_path / "hal", *options)
    try:
        await client.expect("[Welcome hal]")
        assert await server.stop() == []
        await client.expect("[Connection lost; reconnecting...]")
        # The same certificate (kept beside the key) on the same port.
        again = await start_server(own_private_pem, "--tls", "--port", str(server.port))
        client.server = again
        await client.expect("[Reconnected as hal.]", timeout=20)
        await client.close()
    finally:
        await client.terminate()


def test_the_options_and_the_choice() -> None:
    parser = build_parser()
    args = parser.parse_args([HOST])
    assert tls_choice(args.tls, args.tls_fingerprint) is None
    args = parser.parse_args([HOST, "--tls"])
    assert tls_choice(args.tls, args.tls_fingerprint) == TlsChoice(None)
    hex_digits = "ab" * 32
    args = parser.parse_args([HOST, "--tls-fingerprint", hex_digits])
    assert tls_choice(args.tls, args.tls_fingerprint) == TlsChoice(":".join(["AB"] * 32))
    with pytest.raises(argparse.ArgumentTypeError, match="not a SHA-256 fingerprint"):
        tls_fingerprint("ab:cd")
    with pytest.raises(argparse.ArgumentTypeError, match="not a SHA-256 fingerprint"):
        tls_fingerprint("zz" * 32)
    text = parser.format_help()
    assert "--tls " in text and "--tls-fingerprint HEX" in text


def test_refusal_names_host_port_fingerprint_and_the_way_out(key_pair: tuple[Path, Path]) -> None:
    cert_pem, _ = make_certificate(load_private_key(key_pair[0]), HOST)
    der = der_of(cert_pem)
    line = refused_certificate("::1", 8767, der, TlsChoice())
    assert "[::1]:8767" in line and f"--tls-fingerprint {cert_fingerprint(der)};" in line
    assert "\n" not in line


async def test_every_node_of_a_list_over_tls(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """After losing the first node, the client goes on to the next one over TLS too."""
    first = await start_server(own_private_pem, "--tls")
    second = await start_server(own_private_pem, "--tls")
    nodes = f"{HOST}:{first.port},{HOST}:{second.port}"
    cwd = tmp_path / "ivy"
    cwd.mkdir()
    args = ["-m", "chat.client", nodes, str(key_pair[1]), "--tls", "--reconnect", "--username", "ivy"]
    client = await LineClient.spawn("ivy", args, cwd, split_prompts=True)
    assert isinstance(client, LineClient)
    client.server, client.cwd = first, cwd
    try:
        await client.expect("[Welcome ivy]")
        assert await first.stop() == []
        await client.expect("[Connection lost; reconnecting...]")
        client.server = second
        await client.expect("[Reconnected as ivy.]", timeout=20)
        await client.sync("ivy")  # /list answered by the second node
        await client.close()
    finally:
        await client.terminate()


async def test_terminal_trusts_on_first_use_over_https(
    start_server: Start, own_private_pem: Path, key_pair: tuple[Path, Path], tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """On a terminal the same question as without TLS; the certificate is then checked
    against the key just trusted, and the session runs over wss://."""
    server = await start_server(own_private_pem, "--tls")
    config = tmp_path / "config"
    key = fingerprint(load_public_key(key_pair[1]))
    args = [HOST, "--port", str(server.port), "--tls", "--username", "jo"]
    terminal = Terminal.spawn(args, cwd=tmp_path / "jo", config_dir=config)
    request.addfinalizer(terminal.close)
    await terminal.expect(f"The chat server at {HOST}:{server.port} is not known yet")
    await terminal.expect(f"Its key fingerprint is {key}.")
    await terminal.expect("Trust this server? (yes/no)")
    terminal.send("yes\r")
    await terminal.expect(f"Pinned the key {key} of {HOST}:{server.port}")
    await terminal.expect(f"Connected to wss://{HOST}:{server.port} (server key {key}).")
    await terminal.expect("[Welcome jo]")
    terminal.send("/quit\r")
    assert await terminal.wait_exit() == 0
    assert pins(config) == [[f"{HOST}:{server.port}", key]]
