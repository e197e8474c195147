"""The login throttle, the bounded password work and the KDF, without a server: the
throttle's clock is a parameter, so windows pass without sleeping."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chat.client.render import render
from chat.protocol.envelope import decode_event, encode_event
from chat.server.login_throttle import LoginThrottle, address_prefix
from chat.server.passwords import (
    PasswordWork,
    ServerBusy,
    check_password,
    hash_password,
    needs_rehash,
    verify_password,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**options: object) -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    return LoginThrottle(clock=clock, **options), clock  # type: ignore[arg-type]


def test_prefixes_are_ipv4_24_and_ipv6_64() -> None:
    assert address_prefix("192.0.2.77") == "192.0.2.0/24"
    assert address_prefix("127.0.0.2") == address_prefix("127.0.0.3") == "127.0.0.0/24"
    assert address_prefix("127.0.1.2") == "127.0.1.0/24"
    assert address_prefix("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_prefix("2001:db8:1:2::ffff") == "2001:db8:1:2::/64"
    assert address_prefix("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_prefix("::ffff:192.0.2.5") == "192.0.2.0/24"
    assert address_prefix("?") == "?"


def test_an_attempt_is_counted_when_reserved_and_refunded_on_success() -> None:
    throttle, _ = make(per_pair=5, per_prefix=20)
    held = [throttle.reserve("vic", "10.0.0.1") for _ in range(5)]
    assert all(r is not None for r in held)
    assert throttle.reserve("vic", "10.0.0.1") is None, "five in flight use the whole budget"
    assert held[0] is not None
    throttle.refund(held[0])
    throttle.refund(held[0])  # refunding twice gives back one attempt only
    assert throttle.reserve("vic", "10.0.0.1") is not None
    assert throttle.reserve("vic", "10.0.0.1") is None


def test_the_pair_budget_returns_after_the_window() -> None:
    throttle, clock = make(per_pair=2, window=600.0)
    assert throttle.reserve("vic", "10.0.0.1") and throttle.reserve("vic", "10.0.0.1")
    clock.now += 599
    assert throttle.reserve("vic", "10.0.0.1") is None
    clock.now += 2
    assert throttle.reserve("vic", "10.0.0.1") is not None


def test_the_prefix_budget_is_shared_by_a_network_across_names() -> None:
    throttle, _ = make(per_pair=5, per_prefix=4)
    for n in range(4):
        assert throttle.reserve(f"user{n}", f"10.0.0.{n + 2}") is not None
    assert throttle.reserve("other", "10.0.0.99") is None, "same /24"
    assert throttle.reserve("other", "10.0.1.2") is not None, "another /24"
    for n in range(4):
        assert throttle.reserve(f"user{n}", f"2001:db8::{n + 1}") is not None
    assert throttle.reserve("other", "2001:db8::ffff:1") is None, "same /64"
    assert throttle.reserve("other", "2001:db8:0:1::1") is not None, "another /64"


def test_a_zero_budget_means_no_limit_of_that_kind() -> None:
    """Behind a reverse proxy every attempt comes from the proxy's address: the operator
    turns the network budget off (0) and keeps the per-name protections."""
    throttle, _ = make(per_pair=3, per_prefix=0)
    for n in range(50):
        assert throttle.reserve(f"user{n}", "10.0.0.1") is not None
    assert throttle.reserve("user0", "10.0.0.1") and throttle.reserve("user0", "10.0.0.1")
    assert throttle.reserve("user0", "10.0.0.1") is None, "the per-name budget still holds"


def test_a_name_gets_a_growing_capped_delay_never_a_refusal() -> None:
    throttle, _ = make(per_pair=5, per_prefix=20, delay_cap=30.0)
    delays = []
    for n in range(40):
        reservation = throttle.reserve("vic", f"10.{n}.0.1")
        assert reservation is not None, "other networks' failures never refuse the name"
        delays.append(reservation.delay)
    assert delays[:5] == [0.0, 0.0, 0.5, 1.0, 2.0]
    assert delays == sorted(delays)
    assert max(delays) == 30.0 and delays[-1] == 30.0


def test_refunds_do_not_grow_the_name_delay() -> None:
    throttle, _ = make()
    for _ in range(10):
        reservation = throttle.reserve("vic", "10.0.0.1")
        assert reservation is not None and reservation.delay == 0.0
        throttle.refund(reservation)


def test_the_tables_stay_bounded() -> None:
    throttle, clock = make(max_keys=100)
    for n in range(5000):
        throttle.reserve(f"name{n}", f"10.{n // 250}.{n % 250}.1")
    assert len(throttle.pairs) <= 100 and len(throttle.names) <= 100 and len(throttle.prefixes) <= 100
    clock.now += 601
    for n in range(20):
        throttle.reserve("fresh", f"10.200.{n}.1")
    assert len(throttle.pairs) == 20, "idle entries are forgotten as new ones arrive"


def test_failures_over_the_global_budget_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    throttle, clock = make(alert_budget=10)
    caplog.set_level(logging.WARNING, "chat.server.login_throttle")
    for n in range(30):
        throttle.reserve("vic", f"10.{n}.0.1")
    assert len(caplog.records) == 1
    clock.now += 61
    for n in range(30, 40):
        throttle.reserve("vic", f"10.{n}.0.1")
    assert len(caplog.records) == 2


def test_new_hashes_are_argon2id_with_owasp_parameters() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert not needs_rehash(stored)
    assert check_password("correct horse", stored) == (True, None)


def _old_scrypt_hash(password: str) -> str:
    salt = os.urandom(16)
    digest = Scrypt(salt=salt, length=32, n=1 << 14, r=8, p=1).derive(password.encode())
    return f"scrypt$14$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_old_scrypt_and_weaker_argon2id_hashes_verify_and_are_replaced() -> None:
    old = _old_scrypt_hash("correct horse")
    kdf = Argon2id(salt=os.urandom(16), length=32, iterations=1, lanes=1, memory_cost=8192)
    weak = kdf.derive_phc_encoded(b"correct horse")
    for stored in (old, weak):
        assert needs_rehash(stored)
        assert check_password("wrong horse", stored) == (False, None)
        matched, new = check_password("correct horse", stored)
        assert matched and new is not None and new.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert verify_password("correct horse", new)
    assert not verify_password("x", "garbage") and not verify_password("x", "$argon2id$broken")


async def test_password_work_refuses_beyond_its_queue_at_once() -> None:
    work = PasswordWork(workers=1, max_waiting=1)
    release = threading.Event()
    try:
        running = asyncio.create_task(work.run(release.wait, 10))
        waiting = asyncio.create_task(work.run(lambda: "done"))
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusy):
            await work.run(lambda: "refused")
        release.set()
        assert await running is True and await waiting == "done"
        assert work.pending == 0
        assert await work.run(lambda: "again") == "again"
    finally:
        release.set()
        work.close()


def test_the_client_renders_the_new_errors() -> None:
    busy = encode_event("error", code="server_busy")
    assert render(decode_event(busy)) == ["[The server is busy; try again in a moment.]"]
    too_many = decode_event(encode_event("error", code="too_many_registrations", limit=5))
    line = "[Too many new accounts from your network (at most 5 an hour); try again later.]"
    assert render(too_many) == [line]
