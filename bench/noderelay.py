"""The Node ``ws`` relay target (``bench/node_relay.js``): finding ``node``, installing
``ws`` 8 once into the results directory (never into the repository), and the reason
the target is skipped when that cannot be done."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: The major version of ``ws`` measured; the relay is written against its API.
WS_SPEC = "ws@8"
SCRIPT = "node_relay.js"
INSTALL_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class NodeRelay:
    """What it takes to start the relay: the ``node`` executable and ``ws``'s location."""

    node: str
    node_version: str
    ws_version: str
    #: The ``node_modules`` directory holding ``ws`` (given to node as NODE_PATH).
    modules: Path

    def describe(self) -> dict[str, str]:
        return {"node": self.node_version, "ws": self.ws_version, "modules": str(self.modules)}


def _installed_ws(modules: Path) -> str | None:
    """The version of ``ws`` 8 installed under ``modules``, else None."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        version = str(json.loads((modules / "ws" / "package.json").read_text())["version"])
        if version.startswith("8."):
            return version
    return None


def _npm_error(run: subprocess.CompletedProcess[str]) -> str:
    """The line of npm's output that says what went wrong."""
    lines = [line.strip() for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    errors = [line.removeprefix("npm error").strip() for line in lines if line.startswith("npm error")]
    for line in errors:
        if "Error" in line:
            return line
    return (errors or lines or [f"exit code {run.returncode}"])[0]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Only one process installs into ``directory`` at a time (runs may share it)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; installs are rare
        yield
        return
    with open(directory / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare(directory: Path) -> NodeRelay | str:
    """The relay ready to start, ``ws`` installed into ``directory`` with npm if it is not
    there yet; or, when that is impossible, the one-line reason the target is skipped."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed (not on the PATH)"
    try:
        node_version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30,
                                      check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"node --version failed: {exc}"
    modules = directory / "node_modules"
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        version = _installed_ws(modules)
        if version is None:
            npm = shutil.which("npm")
            if npm is None:
                return "npm is not installed (needed once to install ws 8 into the results directory)"
            # A package.json of its own, so npm installs here and not into a parent project.
            manifest = directory / "package.json"
            if not manifest.exists():
                manifest.write_text(json.dumps({"name": "chat-bench-node-relay", "private": True}) + "\n")
            # One retry: without the registry the bench should say so within seconds.
            command = [npm, "install", "--no-audit", "--no-fund", "--fetch-retries", "1", "--prefix",
                       str(directory), WS_SPEC]
            try:
                run = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                                     cwd=directory)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"npm install {WS_SPEC} failed: {exc}"
            version = _installed_ws(modules)
            if run.returncode != 0 or version is None:
                return f"npm install {WS_SPEC} into {directory} failed: {_npm_error(run)}"
    return NodeRelay(node, node_version, version, modules)
