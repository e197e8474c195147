"""The client's configuration: what its options decide (``chat-client --help``), with the
defaults in one place; app.py fills it from the command line and the components take it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chat.client.file_policy import DownloadLimits

DEFAULT_PORT = 8767
DEFAULT_DOWNLOAD_DIR = "downloads/"
DEFAULT_MAX_FILE_SIZE = 1 << 30


@dataclass(frozen=True)
class ClientConfig:
    port: int = DEFAULT_PORT
    #: Where received files are saved (created if needed).
    download_dir: Path = Path(DEFAULT_DOWNLOAD_DIR)
    #: Largest file sent or accepted, bytes.
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    #: Offer to open received files (never programs, scripts or launchers).
    open_files: bool = False
    #: Ask before accepting each file instead of accepting automatically.
    ask_files: bool = False
    #: What others may make this client download: total bytes, offers per sender per
    #: minute, files at once (file_policy.py).
    download_limits: DownloadLimits = field(default_factory=DownloadLimits)
