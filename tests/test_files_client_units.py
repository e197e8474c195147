"""Client pieces that file transfer relies on: pacing shared by several tasks, the rate
meter of the progress bar, ``--max-file-size`` values and the offered name."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from chat.client.app import Pacer, file_size
from chat.client.transfer_base import RateMeter, offered_name
from chat.protocol.limits import MAX_FILE_NAME_CHARS


async def test_pacer_shared_by_concurrent_tasks_never_exceeds_its_rate() -> None:
    """Transfers and the chat loop wait on one pacer at once: each must get its own token."""
    loop = asyncio.get_running_loop()
    pacer = Pacer(rate=20.0, burst=2)
    start = loop.time()
    times: list[float] = []

    async def one() -> None:
        await pacer.wait()
        times.append(loop.time() - start)

    await asyncio.gather(*(one() for _ in range(6)))
    times.sort()
    # Two at once (the burst), then one every 1/20 s.
    assert times[1] < 0.03
    for index in range(2, 6):
        assert times[index] >= (index - 1) / 20 - 0.005, times


def test_rate_meter() -> None:
    meter = RateMeter(span=3.0)
    assert meter.update(10.0, 0) == 0.0
    assert meter.update(11.0, 1000) == pytest.approx(1000.0)
    assert meter.update(12.0, 3000) == pytest.approx(1500.0)
    # Older samples fall out of the span.
    assert meter.update(20.0, 3000) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0), ("1000", 1000), ("2K", 2048), ("10m", 10 << 20), ("1G", 1 << 30), ("2GiB", 2 << 30),
        ("3 MB", 3 << 20),
    ],
)
def test_max_file_size_values(text: str, size: int) -> None:
    assert file_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "ten", "5X"])
def test_bad_max_file_size_values(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        file_size(text)


def test_offered_name_is_the_base_name_as_valid_text_within_limits() -> None:
    assert offered_name(Path("/home/me/docs/report.pdf")) == "report.pdf"
    assert offered_name(Path("caf\udce9.txt")) == "caf\ufffd.txt"  # undecodable byte on POSIX
    long = offered_name(Path("x" * 400 + ".tar"))
    assert len(long) == MAX_FILE_NAME_CHARS and long.endswith(".tar")
