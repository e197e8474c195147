"""``python -m chat.client`` and the ``chat-client`` console script."""

from __future__ import annotations

import sys

from chat.client.app import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
