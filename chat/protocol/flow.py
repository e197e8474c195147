"""File-transfer flow control (PROTOCOL.md section 7) as plain state, no I/O.

The rules are the same on every side, so they live here once, as h2 keeps HTTP/2's
windows in ``windows.py``:

* a sender sends chunks in order, from offset 0, never past the declared size, and at
  most ``window`` bytes beyond what has been acknowledged (:class:`SendWindow`);
* a receiver takes chunks only in order and only up to the declared size
  (:class:`ReceiveWindow`);
* the server relays to several recipients: what counts as acknowledged to the sender is
  what the slowest recipient still receiving has stored, and acknowledgements only grow
  (:class:`RelayWindow`).

A broken rule raises :class:`FlowError`, whose message says which, in words fit for the
other side (``bad_transfer {detail}``, ``file_failed {detail}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class FlowError(Exception):
    """A chunk or an acknowledgement broke the flow-control rules."""


@dataclass
class SendWindow:
    """The sending side of one transfer: bytes sent and acknowledged so far."""

    size: int
    window: int
    sent: int = 0
    acked: int = 0

    def room(self) -> int:
        """Bytes the sender may send now."""
        return max(0, min(self.size - self.sent, self.acked + self.window - self.sent))

    def fits(self, offset: int, length: int) -> bool:
        """Whether a chunk at ``offset`` of ``length`` bytes is within the window (used to
        decide that flow control, not the rate limit, bounds it)."""
        return offset + length - self.acked <= self.window

    def check_chunk(self, offset: int, length: int) -> None:
        """Raise FlowError unless this chunk is the next one, within size and window."""
        if offset != self.sent:
            raise FlowError(f"chunk at offset {offset}, expected {self.sent}")
        if offset + length > self.size:
            raise FlowError("more data than the declared size")
        if not self.fits(offset, length):
            raise FlowError("data sent beyond the flow-control window")
        if length == 0:
            raise FlowError("empty chunk")

    def chunk(self, offset: int, length: int) -> None:
        """Record a chunk sent (after :meth:`check_chunk`)."""
        self.check_chunk(offset, length)
        self.sent += length

    def acknowledge(self, received: int) -> bool:
        """The peer has ``received`` bytes: True if that is more than before. Never
        beyond what was sent, never backwards (an older ack arriving late is ignored)."""
        if received > self.sent:
            raise FlowError("acknowledged bytes that were not sent")
        if received <= self.acked:
            return False
        self.acked = received
        return True

    @property
    def all_sent(self) -> bool:
        return self.sent == self.size


@dataclass
class ReceiveWindow:
    """The receiving side of one transfer: bytes stored so far."""

    size: int
    received: int = 0

    def chunk(self, offset: int, length: int) -> None:
        """Take the next chunk, or raise FlowError if it is out of order or too much."""
        if offset != self.received or self.received + length > self.size:
            raise FlowError("the data arrived out of order")
        self.received += length

    @property
    def complete(self) -> bool:
        return self.received == self.size


@dataclass
class RelayWindow:
    """The server's view: one sender, several recipients receiving. The sender's
    acknowledged bytes are the slowest receiving recipient's."""

    sender: SendWindow
    #: recipient key -> bytes that recipient has acknowledged.
    received: dict[str, int] = field(default_factory=dict)

    @classmethod
    def new(cls, size: int, window: int) -> RelayWindow:
        return cls(SendWindow(size, window))

    def add(self, recipient: str) -> None:
        self.received[recipient] = 0

    def drop(self, recipient: str) -> bool:
        """A recipient stopped receiving (stored, failed or gone): True if that moved the
        sender's acknowledged bytes (the slowest may have been this one)."""
        self.received.pop(recipient, None)
        return self._advance()

    def ack(self, recipient: str, received: int) -> bool:
        """``recipient`` has stored ``received`` bytes: True if the sender's acknowledged
        bytes grew (then the sender is told). Acks only grow and never pass what was sent."""
        before = self.received[recipient]
        if not before <= received <= self.sender.sent:
            raise FlowError("acknowledged bytes that were not sent")
        self.received[recipient] = received
        return self._advance()

    def paced_ack(self, recipient: str, received: int) -> bool:
        """Whether flow control bounds this ack: from a recipient still receiving, for
        bytes it had not acknowledged, no more than were sent."""
        before = self.received.get(recipient)
        return before is not None and before < received <= self.sender.sent

    def _advance(self) -> bool:
        if not self.received:
            return False
        return self.sender.acknowledge(min(self.received.values()))
