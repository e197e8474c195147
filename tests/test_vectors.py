"""Test vectors (PROTOCOL.md, "Worked example"): recompute every value with the real protocol core.

``tests/vectors/handshake.json`` holds fixed inputs (the test RSA key in
``tests/vectors/server_private.pem``, the random bytes each side draws, the RSA-OAEP
output) and every byte the protocol derives from them. The tests below recompute the
outputs with ``chat.protocol`` and require byte equality, and require the worked example
in PROTOCOL.md to show exactly the same values, so neither the code, nor the JSON, nor
the document can drift.

Run ``python tests/test_vectors.py`` to print the JSON and the document's blocks after a
deliberate protocol change (then paste/write them; the inputs never change).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chat.keys import fingerprint, fingerprint_bytes, spki_der
from chat.protocol.envelope import decode_event, decode_request, encode_event, encode_request
from chat.protocol.errors import HandshakeErrorCode
from chat.protocol.handshake import (
    KEY_EXPANSION_INFO,
    OAEP,
    RESUMED_KEY_EXPANSION_INFO,
    ClientHandshake,
    KeySchedule,
    ServerHandshake,
    encode_handshake_error,
)
from chat.protocol.records import SecureChannel
from chat.protocol.tickets import ClientTicket, TicketSealer, binder_key, ticket_key

ROOT = Path(__file__).resolve().parent.parent
VECTOR_DIR = Path(__file__).resolve().parent / "vectors"
VECTOR_FILE = VECTOR_DIR / "handshake.json"
KEY_FILE = VECTOR_DIR / "server_private.pem"
PROTOCOL_MD = ROOT / "PROTOCOL.md"

#: The fixed inputs, in the order each side draws them from its random source.
INPUTS: dict[str, str] = {
    "client_random": bytes(range(0x00, 0x20)).hex(),
    "client_x25519_private": bytes(range(0x20, 0x40)).hex(),
    "rsa_secret": bytes(range(0x40, 0x60)).hex(),
    "server_random": bytes(range(0x80, 0xA0)).hex(),
    "server_x25519_private": bytes(range(0xA0, 0xC0)).hex(),
}

#: The fixed inputs of the resumed handshake (PROTOCOL.md 9.8): the ticket's issue time,
#: lifetime and nonce, then what each side draws, in order.
RESUMPTION_INPUTS: dict[str, Any] = {
    "ticket_issued": 1_700_000_000,
    "ticket_lifetime": 3600,
    "ticket_nonce": bytes(range(0xB0, 0xBC)).hex(),
    "resume_client_random": bytes(range(0x60, 0x80)).hex(),
    "resume_client_x25519_private": bytes(range(0xC0, 0xE0)).hex(),
    "resume_server_random": bytes(range(0xE0, 0x100)).hex(),
    "resume_server_x25519_private": bytes(range(0x10, 0x30)).hex(),
}

#: The sample envelopes sealed in each direction, in sequence order.
C2S_ENVELOPES: list[dict[str, Any]] = [
    {"type": "login", "name": "alice", "rid": 1},
    {"type": "broadcast", "text": "Grüße 👋", "rid": 2},
]
S2C_ENVELOPES: list[dict[str, Any]] = [
    {"type": "welcome", "name": "alice", "re": 1},
    {"type": "ok", "re": 2},
]

HANDSHAKE_ERROR_SAMPLE = (
    HandshakeErrorCode.VERSION_MISMATCH,
    "this server speaks protocol version 1, the client sent 2",
)


class FixedRandom:
    """A random source that hands out fixed chunks, checking each requested size."""

    def __init__(self, *chunks: bytes) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)

    def __call__(self, n: int) -> bytes:
        chunk = next(self._chunks)
        assert len(chunk) == n, f"asked for {n} bytes, fixture has {len(chunk)}"
        return chunk


class FixedWrapClient(ClientHandshake):
    """A ClientHandshake whose only other random step, RSA-OAEP, returns a fixed value."""

    def __init__(self, server_public_key: rsa.RSAPublicKey, wrapped: bytes, **kwargs: Any) -> None:
        super().__init__(server_public_key, **kwargs)
        self._fixed_wrapped = wrapped

    def _wrap(self, secret: bytes) -> bytes:
        return self._fixed_wrapped


def load_test_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(KEY_FILE.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def load_vectors() -> dict[str, Any]:
    return json.loads(VECTOR_FILE.read_text(encoding="utf-8"))


def _x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw
    )


def compute_vectors(inputs: dict[str, str], wrapped: bytes) -> dict[str, Any]:
    """Run both handshakes and both record directions with the real code; return every value."""
    key = load_test_key()
    ins = {name: bytes.fromhex(value) for name, value in inputs.items()}
    client = FixedWrapClient(
        key.public_key(),
        wrapped,
        random_source=FixedRandom(ins["client_random"], ins["client_x25519_private"], ins["rsa_secret"]),
    )
    server = ServerHandshake(
        key, random_source=FixedRandom(ins["server_random"], ins["server_x25519_private"])
    )
    client_hello = client.client_hello()
    server_hello = server.receive_client_hello(client_hello)
    client_finished = client.receive_server_hello(server_hello)
    server_keys = server.receive_client_finished(client_finished)
    assert client.keys is not None

    # The intermediate values, computed from the definitions in PROTOCOL.md section 3.
    shared = X25519PrivateKey.from_private_bytes(ins["client_x25519_private"]).exchange(
        X25519PublicKey.from_public_bytes(_x25519_public(ins["server_x25519_private"]))
    )
    th1 = hashlib.sha256(client_hello + server_hello[:69]).digest()
    th2 = hashlib.sha256(client_hello + server_hello).digest()
    ikm = shared + ins["rsa_secret"]
    prk = hmac.new(th1, ikm, hashlib.sha256).digest()
    schedule = KeySchedule.derive(shared, ins["rsa_secret"], th1)
    expansion = b"".join(
        [schedule.c2s_key, schedule.s2c_key, schedule.c2s_iv, schedule.s2c_iv,
         schedule.server_confirm_key, schedule.client_confirm_key]
    )
    server_confirm = hmac.new(schedule.server_confirm_key, th1, hashlib.sha256).digest()
    client_confirm = hmac.new(schedule.client_confirm_key, th2, hashlib.sha256).digest()
    # The real state machines agree with the definitions.
    assert server_hello[69:] == server_confirm
    assert client_finished == b"\x03" + client_confirm
    assert (client.keys.send_key, client.keys.send_iv) == (schedule.c2s_key, schedule.c2s_iv)
    assert (client.keys.recv_key, client.keys.recv_iv) == (schedule.s2c_key, schedule.s2c_iv)
    assert (server_keys.send_key, server_keys.recv_key) == (schedule.s2c_key, schedule.c2s_key)
    assert client.keys.transcript_hash == server_keys.transcript_hash == th2

    handshake = {
        "server_spki_der": spki_der(key.public_key()).hex(),
        "server_fingerprint": fingerprint_bytes(key.public_key()).hex(),
        "server_fingerprint_text": fingerprint(key.public_key()),
        "client_x25519_public": _x25519_public(ins["client_x25519_private"]).hex(),
        "client_hello": client_hello.hex(),
        "server_x25519_public": _x25519_public(ins["server_x25519_private"]).hex(),
        "x25519_shared": shared.hex(),
        "transcript_hash_1": th1.hex(),
        "hkdf_ikm": ikm.hex(),
        "hkdf_prk": prk.hex(),
        "key_expansion": expansion.hex(),
        "c2s_key": schedule.c2s_key.hex(),
        "s2c_key": schedule.s2c_key.hex(),
        "c2s_iv": schedule.c2s_iv.hex(),
        "s2c_iv": schedule.s2c_iv.hex(),
        "server_confirm_key": schedule.server_confirm_key.hex(),
        "client_confirm_key": schedule.client_confirm_key.hex(),
        "server_confirm": server_confirm.hex(),
        "server_hello": server_hello.hex(),
        "transcript_hash_2": th2.hex(),
        "client_confirm": client_confirm.hex(),
        "client_finished": client_finished.hex(),
    }

    client_channel = SecureChannel(client.keys)
    server_channel = SecureChannel(server_keys)
    records: list[dict[str, Any]] = []
    for direction, envelopes in (("c2s", C2S_ENVELOPES), ("s2c", S2C_ENVELOPES)):
        sender, receiver = (
            (client_channel, server_channel) if direction == "c2s" else (server_channel, client_channel)
        )
        iv = schedule.c2s_iv if direction == "c2s" else schedule.s2c_iv
        for sequence, envelope in enumerate(envelopes):
            fields = {k: v for k, v in envelope.items() if k != "type"}
            if direction == "c2s":
                plaintext = encode_request(envelope["type"], **fields)
                decoded = decode_request(receiver.open(record := sender.seal(plaintext)))
            else:
                plaintext = encode_event(envelope["type"], **fields)
                decoded = decode_event(receiver.open(record := sender.seal(plaintext)))
            assert {"type": decoded.type, **decoded.fields} == envelope
            nonce = (int.from_bytes(iv, "big") ^ sequence).to_bytes(12, "big")
            records.append(
                {
                    "name": f"{direction}[{sequence}]",
                    "direction": direction,
                    "sequence": sequence,
                    "envelope": envelope,
                    "header": plaintext[4:].decode("utf-8"),
                    "plaintext": plaintext.hex(),
                    "nonce": nonce.hex(),
                    "record": record.hex(),
                }
            )

    code, reason = HANDSHAKE_ERROR_SAMPLE
    resumption = compute_resumption(key, client.keys.resumption_secret, prk)
    return {
        "about": (
            'chat protocol version 1 test vectors (PROTOCOL.md, "Worked example"). All byte strings '
            "are hex. Inputs are fixed; everything else is derived from them."
        ),
        "rsa_private_key_file": KEY_FILE.name,
        "inputs": {**inputs, "rsa_wrapped_secret": wrapped.hex()},
        "handshake": handshake,
        "records": records,
        "handshake_error": {
            "code": int(code),
            "reason": reason,
            "message": encode_handshake_error(code, reason).hex(),
        },
        "resumption": resumption,
    }


def compute_resumption(key: rsa.RSAPrivateKey, secret: bytes, prk: bytes) -> dict[str, Any]:
    """The ticket of the session above and a resumed handshake with it (PROTOCOL.md 2.7)."""
    ins = RESUMPTION_INPUTS
    fixed = {name: bytes.fromhex(value) for name, value in ins.items() if isinstance(value, str)}
    assert secret == hmac.new(prk, b"chat/1 resumption\x01", hashlib.sha256).digest()
    print_ = fingerprint_bytes(key.public_key())
    t_key = ticket_key(key, print_)
    issued, lifetime = ins["ticket_issued"], ins["ticket_lifetime"]
    contents = issued.to_bytes(8, "big") + (issued + lifetime).to_bytes(8, "big") + print_ + secret
    ticket = TicketSealer(t_key, print_).seal(secret, issued, issued + lifetime, fixed["ticket_nonce"])
    client = ClientHandshake(
        key.public_key(),
        random_source=FixedRandom(fixed["resume_client_random"], fixed["resume_client_x25519_private"]),
        resume=ClientTicket(ticket, secret, print_, float("inf")),
    )
    server = ServerHandshake(
        key,
        random_source=FixedRandom(fixed["resume_server_random"], fixed["resume_server_x25519_private"]),
        tickets=TicketSealer(t_key, print_),
        ticket_lifetime=lifetime,
        clock=lambda: issued + 60.0,
    )
    resume_hello = client.client_hello()
    server_hello = server.receive_resume_hello(resume_hello)
    client_finished = client.receive_server_hello(server_hello)
    server_keys = server.receive_client_finished(client_finished)
    assert client.keys is not None and client.keys.transcript_hash == server_keys.transcript_hash
    shared = X25519PrivateKey.from_private_bytes(fixed["resume_client_x25519_private"]).exchange(
        X25519PublicKey.from_public_bytes(_x25519_public(fixed["resume_server_x25519_private"]))
    )
    th1 = hashlib.sha256(resume_hello + server_hello[:69]).digest()
    th2 = hashlib.sha256(resume_hello + server_hello).digest()
    ikm = shared + secret
    resumed_prk = hmac.new(th1, ikm, hashlib.sha256).digest()
    schedule = KeySchedule.derive(shared, secret, th1, RESUMED_KEY_EXPANSION_INFO)
    expansion = b"".join(
        [schedule.c2s_key, schedule.s2c_key, schedule.c2s_iv, schedule.s2c_iv,
         schedule.server_confirm_key, schedule.client_confirm_key]
    )
    assert server_hello[69:] == hmac.new(schedule.server_confirm_key, th1, hashlib.sha256).digest()
    assert client_finished[1:] == hmac.new(schedule.client_confirm_key, th2, hashlib.sha256).digest()
    assert client.keys.send_key == schedule.c2s_key == server_keys.recv_key
    b_key = binder_key(secret)
    return {
        "inputs": dict(ins),
        "values": {
            "resumption_secret": secret.hex(),
            "ticket_key": t_key.hex(),
            "ticket_contents": contents.hex(),
            "ticket": ticket.hex(),
            "binder_key": b_key.hex(),
            "resume_client_x25519_public": _x25519_public(fixed["resume_client_x25519_private"]).hex(),
            "resume_binder": resume_hello[-32:].hex(),
            "resume_hello": resume_hello.hex(),
            "resume_server_x25519_public": _x25519_public(fixed["resume_server_x25519_private"]).hex(),
            "resume_x25519_shared": shared.hex(),
            "resume_transcript_hash_1": th1.hex(),
            "resume_hkdf_prk": resumed_prk.hex(),
            "resume_key_expansion": expansion.hex(),
            "resume_server_hello": server_hello.hex(),
            "resume_transcript_hash_2": th2.hex(),
            "resume_client_finished": client_finished.hex(),
            "resume_resumption_secret": schedule.resumption_secret.hex(),
        },
    }


def flatten(vectors: dict[str, Any]) -> dict[str, str]:
    """Name -> value, with the names the worked example in PROTOCOL.md uses."""
    flat: dict[str, str] = {}
    flat.update(vectors["inputs"])
    flat.update(vectors["handshake"])
    for record in vectors["records"]:
        for part in ("header", "plaintext", "nonce", "record"):
            flat[f"{record['name']}.{part}"] = record[part]
    flat["handshake_error"] = vectors["handshake_error"]["message"]
    resumption = vectors["resumption"]
    flat.update({name: str(value) for name, value in resumption["inputs"].items()})
    flat.update(resumption["values"])
    return flat


def worked_example(markdown: str) -> str:
    """The text of PROTOCOL.md's worked-example section."""
    match = re.search(r"^## \d+\. Worked example.*?(?=^## |\Z)", markdown, flags=re.M | re.S)
    assert match, "PROTOCOL.md has no 'Worked example' section"
    return match.group(0)


_ASSIGNMENT = re.compile(r"^([a-z0-9_]+(?:\[\d+\]\.[a-z]+)?)\s+=\s(.*)$")


def document_values(section: str) -> dict[str, str]:
    """``name = value`` lines (and their indented continuations) inside fenced blocks."""
    values: dict[str, str] = {}
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", section, flags=re.M | re.S)
    for block in blocks:
        current: str | None = None
        for line in block.splitlines():
            match = _ASSIGNMENT.match(line)
            if match:
                current = match.group(1)
                assert current not in values, f"{current} appears twice in PROTOCOL.md"
                values[current] = match.group(2)
            elif current is not None and line.startswith(" ") and line.strip():
                values[current] += line.strip()
            else:
                current = None
    return values


def render_block(names: list[str], flat: dict[str, str], width: int = 64) -> str:
    """A fenced block in the document's format (used to write PROTOCOL.md)."""
    pad = max(len(name) for name in names)
    lines = []
    for name in names:
        value = flat[name]
        chunks = [value[i : i + width] for i in range(0, len(value), width)] or [""]
        if name.endswith(".header") or name.endswith("_text"):
            chunks = [value]
        lines.append(f"{name.ljust(pad)} = {chunks[0]}")
        lines.extend(" " * (pad + 3) + chunk for chunk in chunks[1:])
    return "```text\n" + "\n".join(lines) + "\n```"


# --- tests --------------------------------------------------------------------------


def test_wrapped_secret_is_a_real_oaep_encryption() -> None:
    vectors = load_vectors()
    wrapped = bytes.fromhex(vectors["inputs"]["rsa_wrapped_secret"])
    assert load_test_key().decrypt(wrapped, OAEP) == bytes.fromhex(vectors["inputs"]["rsa_secret"])


def test_inputs_are_the_documented_ones() -> None:
    vectors = load_vectors()
    assert {k: v for k, v in vectors["inputs"].items() if k != "rsa_wrapped_secret"} == INPUTS
    assert vectors["resumption"]["inputs"] == RESUMPTION_INPUTS
    assert vectors["rsa_private_key_file"] == KEY_FILE.name
    assert load_test_key().key_size == 2048


def test_code_reproduces_every_vector() -> None:
    vectors = load_vectors()
    wrapped = bytes.fromhex(vectors["inputs"]["rsa_wrapped_secret"])
    computed = compute_vectors(INPUTS, wrapped)
    assert computed["handshake"] == vectors["handshake"]
    assert computed["records"] == vectors["records"]
    assert computed["handshake_error"] == vectors["handshake_error"]
    assert computed["resumption"] == vectors["resumption"]
    assert computed == vectors


def test_key_expansion_split_and_labels() -> None:
    """The 152 HKDF bytes split as documented; info is the documented ASCII label."""
    hs = load_vectors()["handshake"]
    okm = bytes.fromhex(hs["key_expansion"])
    assert len(okm) == 152
    assert KEY_EXPANSION_INFO == b"chat/1 key expansion"
    parts = ["c2s_key", "s2c_key", "c2s_iv", "s2c_iv", "server_confirm_key", "client_confirm_key"]
    sizes = [32, 32, 12, 12, 32, 32]
    offset = 0
    for name, size in zip(parts, sizes, strict=True):
        assert okm[offset : offset + size].hex() == hs[name], name
        offset += size


def test_protocol_md_shows_exactly_the_vectors() -> None:
    """Every value in the JSON appears, byte for byte, in PROTOCOL.md's worked example,
    and the example shows nothing that is not in the JSON."""
    flat = flatten(load_vectors())
    shown = document_values(worked_example(PROTOCOL_MD.read_text(encoding="utf-8")))
    missing = sorted(set(flat) - set(shown))
    extra = sorted(set(shown) - set(flat))
    assert not missing, f"PROTOCOL.md lacks {missing}"
    assert not extra, f"PROTOCOL.md shows unknown values {extra}"
    for name, value in flat.items():
        assert re.sub(r"\s+", "", shown[name]) == re.sub(r"\s+", "", value), name


def test_protocol_md_quotes_the_limits() -> None:
    """The limits table names every constant of chat/protocol/limits.py with its value."""
    from chat.protocol import limits

    text = PROTOCOL_MD.read_text(encoding="utf-8")
    for name in dir(limits):
        if name.isupper():
            value = getattr(limits, name)
            row = re.search(rf"^\|[^\n]*`{name}`[^\n]*$", text, flags=re.M)
            assert row, f"PROTOCOL.md has no table row for {name}"
            assert f"{value:,}" in row.group(0) or f"| {value} |" in row.group(0), name


if __name__ == "__main__":
    existing = load_vectors() if VECTOR_FILE.exists() else None
    if existing is not None:
        wrapped_secret = bytes.fromhex(existing["inputs"]["rsa_wrapped_secret"])
    else:
        wrapped_secret = load_test_key().public_key().encrypt(bytes.fromhex(INPUTS["rsa_secret"]), OAEP)
    result = compute_vectors(INPUTS, wrapped_secret)
    if sys.argv[1:] == ["--write"]:
        VECTOR_FILE.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        flat_values = flatten(result)
        for group in sys.argv[1:] or [",".join(flat_values)]:
            print(render_block(group.split(","), flat_values))
