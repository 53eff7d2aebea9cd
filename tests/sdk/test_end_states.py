"""The channel ends' state tables, without sockets: every path a writer and a reader can take."""

from __future__ import annotations

import pytest

from iii.errors import UsageError
from iii.sdk.end_states import (
    READER_FINISHED,
    WRITER_FINISHED,
    WRITER_TRANSITIONS,
    ReaderEvent,
    ReaderState,
    WriterEvent,
    WriterState,
    reader_after,
    writer_after,
)


def run_writer(*events: WriterEvent) -> WriterState:
    state = WriterState.OPEN
    for event in events:
        state = writer_after(state, event)
    return state


def test_a_writer_closes_aborts_or_breaks() -> None:
    assert run_writer(WriterEvent.CLOSE, WriterEvent.DELIVERED) is WriterState.CLOSED
    assert run_writer(WriterEvent.CLOSE, WriterEvent.CLOSE, WriterEvent.DELIVERED) is WriterState.CLOSED  # idempotent
    assert run_writer(WriterEvent.ABORT, WriterEvent.DELIVERED) is WriterState.ABORTED
    assert run_writer(WriterEvent.CLOSE, WriterEvent.BREAK) is WriterState.BROKEN
    assert run_writer(WriterEvent.BREAK) is WriterState.BROKEN
    # A late break after the end changes nothing: the end was delivered.
    assert run_writer(WriterEvent.CLOSE, WriterEvent.DELIVERED, WriterEvent.BREAK) is WriterState.CLOSED


def test_a_writer_refuses_what_its_state_does_not_allow() -> None:
    with pytest.raises(UsageError, match="cannot abort a channel writer that is closing"):
        run_writer(WriterEvent.CLOSE, WriterEvent.ABORT)
    with pytest.raises(UsageError, match="cannot close a channel writer that is aborted"):
        run_writer(WriterEvent.ABORT, WriterEvent.DELIVERED, WriterEvent.CLOSE)


def test_every_writer_state_but_open_is_finished_and_reachable() -> None:
    assert WriterState.OPEN not in WRITER_FINISHED
    reachable = {WriterState.OPEN} | set(WRITER_TRANSITIONS.values())
    assert reachable == set(WriterState)


def test_a_reader_is_read_once_and_ends_or_is_released() -> None:
    state = reader_after(ReaderState.UNREAD, ReaderEvent.TAKE, taken=False)
    assert state is ReaderState.READING
    assert reader_after(state, ReaderEvent.END, taken=True) is ReaderState.ENDED
    assert reader_after(state, ReaderEvent.RELEASE, taken=True) is ReaderState.RELEASED
    # A stream that ended before anyone read it can still be read, once.
    ended = reader_after(ReaderState.UNREAD, ReaderEvent.END, taken=False)
    assert reader_after(ended, ReaderEvent.TAKE, taken=False) is ReaderState.ENDED
    with pytest.raises(UsageError, match="already been read"):
        reader_after(ended, ReaderEvent.TAKE, taken=True)
    with pytest.raises(UsageError, match="cannot take a channel reader that is released"):
        reader_after(ReaderState.RELEASED, ReaderEvent.TAKE, taken=False)
    assert {ReaderState.ENDED, ReaderState.RELEASED} == READER_FINISHED
