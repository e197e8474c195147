"""Safe saving of received files: names, no overwrite, temporary files (downloads.py)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from chat.client.downloads import (
    MAX_NAME_BYTES,
    PART_SUFFIX,
    PartFile,
    candidates,
    open_for_reading,
    safe_name,
    split_extension,
)


@pytest.mark.parametrize(
    ("offered", "saved"),
    [
        ("example.txt", "example.txt"),
        ("résumé 2024.pdf", "résumé 2024.pdf"),
        ("数据.csv", "数据.csv"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.dll", "evil.dll"),
        ("/etc/passwd", "passwd"),
        ("C:\\Users\\x\\a.txt", "a.txt"),
        ("C:a.txt", "C_a.txt"),
        ("..", "file"),
        (".", "file"),
        ("...", "file"),
        ("../", "file"),
        ("/", "file"),
        (".bashrc", "bashrc"),
        ("..hidden", "hidden"),
        ("a\x00b.txt", "ab.txt"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("tab\there\x7f\x9b.txt", "tabhere.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("COM1", "_COM1"),
        ("lpt9.log", "_lpt9.log"),
        ("aux .txt", "_aux .txt"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10", "COM10"),
        ("trailing dot.", "trailing dot"),
        ("trailing space.txt   ", "trailing space.txt"),
        ("   leading.txt", "leading.txt"),
        ("\x00\x01", "file"),
        ("", "file"),
    ],
)
def test_safe_name(offered: str, saved: str) -> None:
    assert safe_name(offered) == saved


def test_safe_name_is_idempotent_and_has_no_path_parts() -> None:
    for offered in ["../x", "a/b/c", "\\\\server\\share\\f", "x\x00/../y", " . . ", "CON.", "con .txt"]:
        name = safe_name(offered)
        assert name and name == safe_name(name)
        assert "/" not in name and "\\" not in name and "\x00" not in name
        assert name not in (".", "..") and not name.startswith(".")


def test_long_names_are_shortened_keeping_the_extension() -> None:
    name = safe_name("x" * 300 + ".tar.gz")
    assert name.endswith(".tar.gz")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    wide = safe_name("é" * 255)
    assert len(wide.encode("utf-8")) <= MAX_NAME_BYTES


def test_numbered_candidates() -> None:
    names = candidates("example.txt")
    assert [next(names) for _ in range(3)] == ["example.txt", "example (1).txt", "example (2).txt"]
    assert [next(candidates("a.tar.gz")) for _ in range(1)] == ["a.tar.gz"]
    gz = candidates("a.tar.gz")
    next(gz)
    assert next(gz) == "a (1).tar.gz"
    plain = candidates("README")
    next(plain)
    assert next(plain) == "README (1)"
    assert split_extension("archive.v2.zip") == ("archive.v2", ".zip")


def _part_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(PART_SUFFIX)]


def test_part_file_is_hidden_private_and_committed_without_overwriting(tmp_path: Path) -> None:
    downloads = tmp_path / "new" / "downloads"
    (first := PartFile.create(downloads)).write(b"one")
    assert downloads.is_dir()
    assert first.path is not None and first.path.name.startswith(".")
    if os.name == "posix":
        assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    (downloads / "example.txt").write_bytes(b"already there")
    saved = first.commit("example.txt")
    assert saved == downloads / "example (1).txt"
    assert saved.read_bytes() == b"one"
    assert (downloads / "example.txt").read_bytes() == b"already there"
    second = PartFile.create(downloads)
    second.write(b"two")
    assert second.commit("../example.txt") == downloads / "example (2).txt"
    assert _part_files(downloads) == []
    first.discard()  # after commit: nothing happens
    assert saved.read_bytes() == b"one"


def test_discard_deletes_the_temporary_file(tmp_path: Path) -> None:
    part = PartFile.create(tmp_path)
    part.write(b"x" * 1000)
    assert len(_part_files(tmp_path)) == 1
    part.discard()
    part.discard()
    assert list(tmp_path.iterdir()) == []


def test_commit_never_follows_a_symlink_planted_under_the_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "example.txt").symlink_to(outside)
    (downloads / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    part = PartFile.create(downloads)
    part.write(b"data")
    assert part.commit("example.txt") == downloads / "example (1).txt"
    assert outside.read_bytes() == b"precious"
    part = PartFile.create(downloads)
    part.write(b"data")
    assert part.commit("dangling.txt") == downloads / "dangling (1).txt"
    assert not (tmp_path / "nowhere.txt").exists()


def test_concurrent_commits_of_the_same_name_all_keep_their_data(tmp_path: Path) -> None:
    parts = []
    for index in range(8):
        part = PartFile.create(tmp_path)
        part.write(str(index).encode())
        parts.append(part)
    saved: list[Path] = []
    threads = [threading.Thread(target=lambda p=p: saved.append(p.commit("same.txt"))) for p in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(saved)) == 8
    assert sorted(p.read_bytes() for p in saved) == [str(i).encode() for i in range(8)]


def test_commit_without_hard_links_still_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "a.txt").write_bytes(b"old")
    part = PartFile.create(tmp_path)
    part.write(b"new")
    assert part.commit("a.txt") == tmp_path / "a (1).txt"
    assert (tmp_path / "a.txt").read_bytes() == b"old"
    assert (tmp_path / "a (1).txt").read_bytes() == b"new"
    assert _part_files(tmp_path) == []


def test_open_for_reading_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        open_for_reading(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_for_reading(tmp_path / "missing")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(ValueError, match="not a regular file"):
            open_for_reading(tmp_path / "fifo")  # without blocking on the open
    (tmp_path / "f").write_bytes(b"abc")
    fd, size = open_for_reading(tmp_path / "f")
    os.close(fd)
    assert size == 3
