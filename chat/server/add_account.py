"""``chat-server --add-account NAME``: create an account from the command line, so an
operator can hand out accounts on a server that refuses guests (README "Accounts")."""

from __future__ import annotations

import asyncio
import getpass
import sys
from typing import TextIO

from chat.server.names import key, username_problem
from chat.server.passwords import MIN_PASSWORD_CHARS, hash_password
from chat.server.store_api import make_store


class AddAccountError(Exception):
    """A user-facing reason the account was not created."""


def read_password(stdin: TextIO = sys.stdin) -> str:
    """Twice with getpass on a terminal (they must match); else the first line of stdin."""
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise AddAccountError("the passwords do not match")
        return first
    line = stdin.readline()
    if not line:
        raise AddAccountError("no password on standard input")
    return line.rstrip("\r\n")


async def _create(db_path: str, name: str, password_hash: str) -> bool:
    storage = make_store(db_path)
    await storage.open()
    try:
        return await storage.create_account(key(name), name, password_hash)
    finally:
        await storage.close()


def add_account(db_path: str, name: str, stdin: TextIO = sys.stdin) -> str:
    """Create the account; returns the line to print, or raises AddAccountError."""
    problem = username_problem(name)
    if problem is not None:
        raise AddAccountError(f"invalid username '{name}': {problem}")
    password = read_password(stdin)
    if len(password) < MIN_PASSWORD_CHARS:
        raise AddAccountError(f"password too short: use at least {MIN_PASSWORD_CHARS} characters")
    if not asyncio.run(_create(db_path, name, hash_password(password))):
        raise AddAccountError(f"'{name}' is already registered in {db_path}")
    return f"Account '{name}' created in {db_path}."
