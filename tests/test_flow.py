"""File-transfer flow control (chat/protocol/flow.py, PROTOCOL.md section 7): the one
state machine both the server's relay and the client use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.protocol.flow import FlowError, ReceiveWindow, RelayWindow, SendWindow


def test_a_sender_sends_in_order_within_size_and_window() -> None:
    window = SendWindow(size=100, window=40)
    assert window.room() == 40
    window.chunk(0, 30)
    assert (window.sent, window.room()) == (30, 10)
    with pytest.raises(FlowError, match="expected 30"):
        window.check_chunk(0, 10)
    with pytest.raises(FlowError, match="beyond the flow-control window"):
        window.check_chunk(30, 11)
    with pytest.raises(FlowError, match="empty chunk"):
        window.check_chunk(30, 0)
    assert window.acknowledge(30) is True
    assert window.room() == 40
    window.chunk(30, 40)
    assert window.acknowledge(70) is True
    with pytest.raises(FlowError, match="more data than the declared size"):
        window.check_chunk(70, 31)
    window.chunk(70, 30)
    assert window.all_sent and window.room() == 0


def test_acknowledgements_only_grow_and_never_pass_what_was_sent() -> None:
    window = SendWindow(size=100, window=50)
    window.chunk(0, 50)
    assert window.acknowledge(20) is True
    assert window.acknowledge(10) is False  # a late, older ack
    assert window.acked == 20
    with pytest.raises(FlowError, match="not sent"):
        window.acknowledge(51)


def test_a_receiver_takes_chunks_only_in_order_and_up_to_the_size() -> None:
    window = ReceiveWindow(size=10)
    window.chunk(0, 4)
    with pytest.raises(FlowError, match="out of order"):
        window.chunk(2, 2)
    with pytest.raises(FlowError, match="out of order"):
        window.chunk(4, 7)
    window.chunk(4, 6)
    assert window.complete


def test_the_relay_acknowledges_the_slowest_recipient() -> None:
    relay = RelayWindow.new(size=1000, window=100)
    relay.add("ann")
    relay.add("bob")
    relay.sender.chunk(0, 100)
    assert relay.ack("ann", 100) is False  # bob has nothing yet
    assert relay.sender.room() == 0
    assert relay.ack("bob", 60) is True
    assert relay.sender.acked == 60
    assert relay.drop("bob") is True  # the slowest left: ann's 100 counts
    assert relay.sender.acked == 100
    with pytest.raises(FlowError):
        relay.ack("ann", 101)
    with pytest.raises(FlowError):
        relay.ack("ann", 50)  # backwards


def test_what_flow_control_bounds_is_told_apart_from_what_it_does_not() -> None:
    """Review M3: only data within the window and acks of new bytes from a recipient
    still receiving are exempt from the rate limit."""
    relay = RelayWindow.new(size=1000, window=100)
    relay.add("ann")
    relay.sender.chunk(0, 80)
    assert relay.sender.fits(80, 20) and not relay.sender.fits(80, 21)
    assert relay.paced_ack("ann", 80) and relay.paced_ack("ann", 1)
    assert not relay.paced_ack("ann", 0), "nothing new"
    assert not relay.paced_ack("ann", 81), "more than was sent"
    assert not relay.paced_ack("mallory", 10), "not a recipient"


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=60), st.integers(1, 120))
def test_no_sequence_of_steps_breaks_the_window(steps: list[tuple[bool, int]], size_window: int) -> None:
    """Random chunks and acks: whatever is accepted keeps the sender within its window
    and the stream without gaps; refusals change nothing."""
    relay = RelayWindow.new(size=500, window=size_window)
    relay.add("r")
    receiver = ReceiveWindow(size=500)
    for is_chunk, amount in steps:
        before = (relay.sender.sent, relay.sender.acked, receiver.received)
        try:
            if is_chunk:
                relay.sender.chunk(relay.sender.sent, amount)
                receiver.chunk(receiver.received, amount)
            else:
                relay.ack("r", min(amount, relay.sender.sent))
        except FlowError:
            assert (relay.sender.sent, relay.sender.acked, receiver.received) == before
            continue
        assert relay.sender.sent - relay.sender.acked <= size_window
        assert relay.sender.acked <= relay.sender.sent <= 500
        assert receiver.received == relay.sender.sent
