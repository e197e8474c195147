"""The one exception handlers raise to refuse a request; it becomes an ``error`` event."""

from __future__ import annotations

from typing import Any

from chat.protocol.codes import ErrorCode


class RequestError(Exception):
    """Refuse the current request with error ``code`` (PROTOCOL.md section 6.3)."""

    def __init__(self, code: ErrorCode, **fields: Any) -> None:
        super().__init__(code)
        self.code = code
        self.fields = fields
