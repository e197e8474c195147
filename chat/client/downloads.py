"""Saving received files safely (README "Files", PROTOCOL.md section 7).

A received file is written to a temporary file inside the download directory and only
moved into place once its size and SHA-256 were checked. The name it is saved under is
derived from the sender's offered name by :func:`safe_name` (a single harmless path
component) and never replaces an existing file: :func:`candidates` yields
``example.txt``, ``example (1).txt``, ``example (2).txt``, ...

The temporary file is ``.<random>.part`` (hidden, and a name no program takes for a
finished download), created exclusively with mode 0600 and deleted on every failure
path. The move into place is atomic and refuses to overwrite even a file created a
moment earlier by another program: the data is hard-linked under the new name (``link``
fails if the name exists) and the temporary name removed; on a file system without hard
links the new name is first created exclusively, then replaced by the data.

Everything here is blocking file-system work: the transfer code runs it in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import stat
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

#: Names Windows reserves for devices, with or without an extension, in any case.
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in (*"123456789", "¹", "²", "³")}
)
#: Characters Windows does not allow in a file name (``/`` and ``\\`` split paths first).
_WINDOWS_INVALID = frozenset('<>:"|?*')
#: Bidirectional controls can make ``evil\u202etxt.exe`` display as ``evilexe.txt``.
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Bytes of UTF-8 a saved name may take: file systems allow 255, this leaves room for
#: a `` (NNNN)`` suffix.
MAX_NAME_BYTES = 200
_DOUBLE_EXTENSIONS = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")
#: How many numbered names to try before falling back to a random one.
_MAX_NUMBERED = 9999
PART_SUFFIX = ".part"
DEFAULT_NAME = "file"


def safe_name(offered: str) -> str:
    """A name that is safe to create in the download directory on any OS.

    Only the last path component is kept (``/``, ``\\``); control characters (NUL
    included) and bidirectional controls are removed; characters Windows forbids
    (``:`` and ``<>"|?*``) become ``_``; leading dots (hidden files, ``.``, ``..``),
    leading spaces and Windows' ignored trailing dots and spaces are stripped; a
    Windows-reserved device name (``CON``, ``nul.txt``, ``COM1``...) gets a ``_`` prefix;
    an over-long name is shortened keeping its extension; nothing left gives ``file``.
    """
    name = unicodedata.normalize("NFC", offered)
    name = re.split(r"[/\\]", name)[-1]
    kept = []
    for char in name:
        if char in _BIDI_CONTROLS or unicodedata.category(char) == "Cc":
            continue
        kept.append("_" if char in _WINDOWS_INVALID else char)
    name = "".join(kept).lstrip(" ").lstrip(".").rstrip(". ")
    if not name:
        return DEFAULT_NAME
    if name.split(".", 1)[0].rstrip(" ").upper() in WINDOWS_RESERVED:
        name = "_" + name
    return _shorten(name)


def split_extension(name: str) -> tuple[str, str]:
    """``report.pdf`` -> (``report``, ``.pdf``); ``a.tar.gz`` -> (``a``, ``.tar.gz``)."""
    lower = name.lower()
    for double in _DOUBLE_EXTENSIONS:
        if lower.endswith(double) and len(name) > len(double):
            return name[: -len(double)], name[-len(double) :]
    stem, dot, extension = name.rpartition(".")
    if dot and stem and len(extension.encode("utf-8")) <= 32:
        return stem, dot + extension
    return name, ""


def _shorten(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, extension = split_extension(name)
    budget = MAX_NAME_BYTES - len(extension.encode("utf-8"))
    while len(stem.encode("utf-8")) > budget:
        stem = stem[:-1]
    return (stem.rstrip(". ") or DEFAULT_NAME) + extension


def candidates(name: str) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, ... then random suffixes."""
    yield name
    stem, extension = split_extension(name)
    for number in range(1, _MAX_NUMBERED + 1):
        yield f"{stem} ({number}){extension}"
    while True:
        yield f"{stem} ({secrets.token_hex(4)}){extension}"


def _current_umask() -> int:
    if os.name != "posix":
        return 0
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import (before any thread could create files with a changed umask).
_UMASK = _current_umask()


class PartFile:
    """A received file's data on its way into the download directory.

    ``create`` opens it; ``write`` appends; ``commit`` moves it into place under a free
    safe name and returns the path; ``discard`` deletes it. ``discard`` after ``commit``
    does nothing, so it can sit in a finally.
    """

    def __init__(self, directory: Path, fd: int, path: Path) -> None:
        self.directory = directory
        #: The temporary file's path; None once it is committed or discarded.
        self.path: Path | None = path
        self._fd: int | None = fd

    @staticmethod
    def prepare(directory: Path) -> Path:
        """Create the download directory if needed and check that files can be made in
        it (before an offer is accepted; the file itself waits for the first data)."""
        directory = Path(os.path.abspath(directory))
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:  # a file has that name
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory)) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied", str(directory))
        return directory

    @classmethod
    def create(cls, directory: Path) -> PartFile:
        """Create the download directory if needed, then an empty temporary file in it."""
        directory = cls.prepare(directory)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            path = directory / f".{secrets.token_hex(8)}{PART_SUFFIX}"
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                continue
            return cls(directory, fd, path)

    @property
    def closed(self) -> bool:
        return self.path is None

    def write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            raise ValueError("write to a closed part file")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def commit(self, offered_name: str) -> Path:
        """Move the data into place under ``safe_name(offered_name)`` or the first free
        numbered variant; never replaces an existing file. Returns the final path."""
        if self._fd is None or self.path is None:
            raise ValueError("commit of a closed part file")
        if os.name == "posix":
            # The temporary file was private (0600); the saved one gets the usual mode.
            os.fchmod(self._fd, 0o666 & ~_UMASK)
        os.close(self._fd)  # Windows cannot rename an open file
        self._fd = None
        name = safe_name(offered_name)
        try:
            for candidate in candidates(name):
                target = self.directory / candidate
                if os.path.dirname(os.path.abspath(target)) != str(self.directory):
                    raise OSError(f"refusing to write outside {self.directory}")  # cannot happen
                if self._place(self.path, target):
                    return target
            raise AssertionError("unreachable: candidates() never ends")
        finally:
            self.discard()

    def _place(self, source: Path, target: Path) -> bool:
        """Move ``source`` to ``target`` unless ``target`` exists (then False)."""
        try:
            os.link(source, target)
        except FileExistsError:
            return False
        except (OSError, NotImplementedError):
            pass  # no hard links on this file system
        else:
            os.unlink(source)
            self.path = None
            return True
        # Reserve the name exclusively, then replace the reservation (our own empty
        # file) with the data.
        try:
            reservation = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        os.close(reservation)
        os.replace(source, target)
        self.path = None
        return True

    def discard(self) -> None:
        """Close and delete the temporary file, if it was not committed."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


def open_for_reading(path: Path) -> tuple[int, int]:
    """Open a regular file to send: (file descriptor, size). Raises OSError, or
    ValueError with a user-facing reason when it is not a regular file."""
    before = os.stat(path)  # a FIFO must not be opened: that could block forever
    if stat.S_ISDIR(before.st_mode):
        raise ValueError("it is a directory, not a file")
    if not stat.S_ISREG(before.st_mode):
        raise ValueError("it is not a regular file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise ValueError("it is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, after.st_size


async def open_with_default_program(path: Path) -> str | None:
    """Open ``path`` with the desktop's default program, detached (``--open``).

    Returns None, or the reason it could not be opened."""
    command = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        if sys.platform == "win32":
            await asyncio.to_thread(os.startfile, path)  # type: ignore[attr-defined]
            return None
        process = await asyncio.create_subprocess_exec(
            command, str(path),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    except FileNotFoundError:
        return f"'{command}' was not found"
    except OSError as exc:
        return exc.strerror or str(exc)
    code = await process.wait()
    return None if code == 0 else f"{command} exited with code {code}"
