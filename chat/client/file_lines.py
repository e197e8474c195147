"""The lines of file transfers (README "Files"): the transfer code knows which file an
event is about; these turn what it knows into the exact lines users and scripts depend
on (docs/messages.md lists them all)."""

from __future__ import annotations

from chat.client.render import render
from chat.protocol.envelope import Envelope
from chat.safe_text import printable


def _reason(detail: str) -> str:
    return printable(detail.strip().rstrip(".")) or "no reason given"


def file_offer_error_line(name: str, error: Envelope) -> list[str]:
    """An ``error`` reply to ``file_offer`` for the file ``name``."""
    code = error.get("code", "")
    name = printable(name)
    if code == "file_too_large":
        return [f"File {name} is too large: the server accepts at most {error.get('limit')} bytes."]
    if code == "too_many_transfers":
        return [
            f"Cannot send {name}: too many file transfers at once (limit {error.get('limit')}); "
            "try again when one finishes."
        ]
    if code == "bad_transfer":
        return [f"Cannot send {name}: {_reason(str(error.get('detail') or ''))}."]
    return render(error)


def file_result_line(
    name: str, target: str, group: bool, delivered: list[str], failed: list[dict[str, str]]
) -> str:
    """The sender's line once every recipient has stored the file, failed or gone."""
    name = printable(name)
    if group:
        if not failed:
            return f"File {name} sent to group {target} successfully."
        who = ", ".join(f"{entry.get('name', '?')} ({_reason(entry.get('detail', ''))})" for entry in failed)
        return f"File {name} was not delivered to: {who}."
    if delivered and not failed:
        return f"File {name} sent to {delivered[0]} successfully."
    user = failed[0].get("name", target) if failed else target
    detail = failed[0].get("detail", "") if failed else ""
    return f"File {name} could not be sent to {user}: {_reason(detail)}."


def file_received_line(saved_name: str, sender: str, group: str | None) -> str:
    if group is not None:
        return f"[Receive {saved_name} from Group {group} {sender}]"
    return f"You received file '{saved_name}' from {sender}."


def file_refused_line(name: str, sender: str, reason: str) -> str:
    return f"Refused file '{printable(name)}' from {sender}: {_reason(reason)}."


def file_aborted_line(name: str, sender: str, detail: str) -> str:
    return f"Transfer of '{printable(name)}' from {sender} was aborted: {_reason(detail)}."


def file_asked_line(name: str, sender: str, size: int, number: int, group: str | None) -> str:
    """An offer waiting for the user (``--ask-files``)."""
    where = f" in group {group}" if group is not None else ""
    return (
        f"{sender}{where} offers file '{printable(name)}' ({human_bytes(size)}): "
        f"type /accept {number} or /decline {number}."
    )


def file_declined_line(name: str, sender: str) -> str:
    return f"Declined file '{printable(name)}' from {sender}."


def file_open_offer_line(saved_name: str, number: int) -> str:
    """``--open``: a received file is opened only when the user asks."""
    return f"Type /open {number} to open '{printable(saved_name)}'."


def file_not_opened_line(saved_name: str) -> str:
    return f"Not opening '{printable(saved_name)}': programs, scripts and launchers are never opened."


def no_offer_waiting_line(number: int | None, waiting: list[int]) -> str:
    """``/accept`` or ``/decline`` with nothing (or not that number) to answer."""
    if not waiting:
        return "No file offer is waiting for an answer."
    numbers = ", ".join(str(n) for n in sorted(waiting))
    return f"No file offer numbered {number} is waiting; the waiting ones: {numbers}."


def nothing_to_open_line(number: int | None) -> str:
    """``/open`` with nothing (or not that number) to open."""
    if number is None:
        return "No received file is waiting to be opened (see --open)."
    return f"No received file numbered {number} is waiting to be opened."


def file_open_failed_line(saved_name: str, problem: str) -> str:
    return f"Could not open '{printable(saved_name)}': {_reason(problem)}."


def file_damaged_line(name: str, sender: str, problem: str) -> str:
    return f"File '{printable(name)}' from {sender} was not saved: {_reason(problem)}."


def human_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def progress_line(label: str, done: int, total: int, rate: float, width: int = 20) -> str:
    """One transfer's progress: ``label [=====>    ]  45%  12.0 MiB of 27.0 MiB  8.1 MiB/s``."""
    fraction = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = int(fraction * width)
    bar = "=" * filled + (">" if filled < width else "") + " " * max(0, width - filled - 1)
    return (
        f"{label} [{bar}] {fraction * 100:3.0f}%  {human_bytes(done)} of {human_bytes(total)}"
        f"  {human_bytes(rate)}/s"
    )
