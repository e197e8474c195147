"""What this client lets others make it download and open (security review M10).

Files offered to a user are accepted automatically, as the product always did, but only
within bounds a stranger cannot push past: a total download quota for this client
process, a rate of accepted offers per sender, and a number of incoming transfers at
once. ``--ask-files`` makes every offer wait for ``/accept`` or ``/decline``. ``--open``
never opens executables or launchers, and even other files only on ``/open``.
"""

from __future__ import annotations

import os
import stat
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DOWNLOAD_QUOTA = 1 << 30
DEFAULT_FILES_PER_MINUTE = 10
DEFAULT_MAX_INCOMING = 8
#: Senders whose offer rate is remembered; the least recently seen go first.
_MAX_SENDERS = 1024

#: Types a desktop runs rather than shows, or that run scripts or macros when opened
#: (lower case, with the dot). A received file of such a type is never opened.
RISKY_EXTENSIONS = frozenset(
    {
        # Windows programs, installers, scripts and shortcuts
        ".exe", ".com", ".bat", ".cmd", ".msi", ".msp", ".msc", ".ps1", ".psm1", ".vbs",
        ".vbe", ".js", ".jse", ".wsf", ".wsh", ".scr", ".pif", ".cpl", ".lnk", ".reg",
        ".hta", ".url", ".inf", ".scf", ".application", ".appref-ms", ".gadget",
        # macOS and Linux programs, launchers and packages
        ".app", ".command", ".tool", ".workflow", ".pkg", ".dmg", ".webloc", ".terminal",
        ".desktop", ".sh", ".bash", ".zsh", ".csh", ".ksh", ".run", ".bin", ".appimage",
        ".deb", ".rpm", ".snap", ".flatpakref", ".elf", ".so", ".dylib", ".dll",
        # interpreters' scripts and archives that run
        ".py", ".pyw", ".pyz", ".pl", ".rb", ".php", ".jar", ".class",
        # pages and documents that run code or macros when shown
        ".html", ".htm", ".xhtml", ".shtml", ".svg", ".xml", ".mht", ".mhtml",
        ".docm", ".dotm", ".xlsm", ".xltm", ".xlam", ".pptm", ".potm", ".ppam", ".sldm",
        ".iso", ".img", ".vhd", ".vhdx",
    }
)  # fmt: skip


#: How a program, script or launcher begins, whatever its name: a ``#!`` script, ELF,
#: a Windows executable (``MZ``), Mach-O and fat binaries (also Java classes), a Windows
#: shortcut. Checked after a UTF-8 byte order mark and leading white space.
_RISKY_PREFIXES = (
    b"#!", b"\x7fELF", b"MZ", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"L\x00\x00\x00\x01\x14\x02\x00",
)  # fmt: skip
#: What a desktop recognises by content as a launcher, a shortcut or a web page (which
#: runs scripts), looked for in the first bytes in any case.
_RISKY_MARKERS = (
    b"[desktop entry]", b"[desktop action", b"[kde desktop entry]", b"[internetshortcut]",
    b"<html", b"<!doctype html", b"<script", b"<svg", b"<?xml", b"<hta:",
)  # fmt: skip
#: Bytes of the file's beginning looked at.
_SNIFF_BYTES = 1024


def risky_name(name: str) -> bool:
    """Whether ``name`` ends in a type of :data:`RISKY_EXTENSIONS`, in any case and also
    when disguised by look-alike forms (full-width letters), or by invisible, space or
    dot characters at its end or inside the extension (``run.sh\u200b``, ``a.exe.``)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    kept = "".join(char for char in folded if unicodedata.category(char)[0] not in "CZ")
    _, dot, extension = kept.rstrip(".").rpartition(".")
    return bool(dot) and f".{extension}" in RISKY_EXTENSIONS


def risky_content(head: bytes) -> bool:
    """Whether a file beginning with ``head`` looks like a program, script, launcher or
    web page, whatever its name says (desktops pick a program by content too)."""
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if start.startswith(_RISKY_PREFIXES):
        return True
    lowered = start[:_SNIFF_BYTES].lower()
    return any(marker in lowered for marker in _RISKY_MARKERS)


def risky_to_open(path: Path) -> bool:
    """Whether opening ``path`` with the desktop's default program could run code: an
    executable or launcher type by name or by content, or a file with an execute
    permission bit (anything that cannot be checked counts as risky)."""
    if risky_name(path.name):
        return True
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: a FIFO put in its place cannot hang us
        try:
            mode = os.fstat(fd).st_mode
            head = os.read(fd, _SNIFF_BYTES) if stat.S_ISREG(mode) else b""
        finally:
            os.close(fd)
    except OSError:
        return True
    if not stat.S_ISREG(mode) or mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        return True
    return risky_content(head)


@dataclass(frozen=True)
class DownloadLimits:
    """``quota``: bytes of files accepted in all by this client process (in flight or
    saved; 0: no quota); ``per_minute``: offers accepted from one sender per minute
    (after a burst of as many; 0: no limit); ``max_incoming``: files received at once."""

    quota: int = DEFAULT_DOWNLOAD_QUOTA
    per_minute: float = DEFAULT_FILES_PER_MINUTE
    max_incoming: int = DEFAULT_MAX_INCOMING


class DownloadGate:
    """Decides whether an offer may be accepted, and keeps the quota's account."""

    def __init__(self, limits: DownloadLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        #: Bytes accepted so far (a transfer that fails gives its bytes back).
        self.used = 0
        self._senders: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def refusal(self, sender: str, size: int, receiving: int) -> str | None:
        """Why an offer of ``size`` bytes from ``sender`` is declined now, as a phrase, or
        None (and then it is charged: call :meth:`give_back` if it is not stored)."""
        limits = self.limits
        if limits.max_incoming and receiving >= limits.max_incoming:
            return f"{limits.max_incoming} files are arriving already"
        if limits.quota and self.used + size > limits.quota:
            return f"it would pass your download quota of {limits.quota} bytes"
        if limits.per_minute and not self._take(sender):
            return f"{sender} sent more than {limits.per_minute:g} files a minute"
        self.used += size
        return None

    def give_back(self, size: int) -> None:
        """A charged file was not stored (declined, failed, aborted)."""
        self.used = max(0, self.used - size)

    def _take(self, sender: str) -> bool:
        now = self._clock()
        rate = self.limits.per_minute
        burst = max(1.0, rate)  # under one a minute still lets one through now and then
        who = sender.casefold()  # the server matches names without case too
        tokens, last = self._senders.pop(who, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate / 60)
        allowed = tokens >= 1
        self._senders[who] = (tokens - 1 if allowed else tokens, now)
        while len(self._senders) > _MAX_SENDERS:
            self._senders.popitem(last=False)
        return allowed
