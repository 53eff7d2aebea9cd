"""The engine's table of a channel end's states, without sockets: every legal move, and nothing else."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from iii.engine.channel_states import (
    CONNECTED,
    END_TRANSITIONS,
    FINISHED,
    TAKEABLE,
    EndEvent,
    EndState,
    EndStateError,
    end_after,
)
from iii.engine.channels import ChannelManager, Role

SRC = Path(__file__).resolve().parents[2] / "src" / "iii"

S, E = EndState, EndEvent
LEGAL = [
    (S.WAITING, E.TAKE, S.RESERVED),
    (S.WAITING, E.RELEASE, S.DONE),
    (S.WAITING, E.CUT, S.DONE),
    (S.RESERVED, E.CONNECT, S.OPEN),
    (S.RESERVED, E.CUT, S.DONE),
    (S.OPEN, E.END, S.DONE),
    (S.OPEN, E.CUT, S.DONE),
    (S.DONE, E.CUT, S.DONE),
]
"""Written out here rather than read from the table, so that a change to the table must change this too."""
ILLEGAL = sorted(
    set(itertools.product(EndState, EndEvent)) - {(state, event) for state, event, _ in LEGAL},
    key=lambda pair: (pair[0].value, pair[1].value),
)


@pytest.mark.parametrize(("state", "event", "following"), LEGAL)
def test_every_legal_transition(state: EndState, event: EndEvent, following: EndState) -> None:
    assert end_after(state, event) is following


def test_the_table_holds_the_legal_transitions_and_no_others() -> None:
    assert {(state, event): following for state, event, following in LEGAL} == END_TRANSITIONS


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_an_illegal_transition_raises_a_clear_error(state: EndState, event: EndEvent) -> None:
    with pytest.raises(EndStateError, match=f"^a channel end that is {state.value} cannot {event.value}$"):
        end_after(state, event)


def test_an_end_that_connects_lives_waiting_reserved_open_done() -> None:
    state = EndState.WAITING
    seen = [state]
    for event in (EndEvent.TAKE, EndEvent.CONNECT, EndEvent.END):
        state = end_after(state, event)
        seen.append(state)
    assert seen == [EndState.WAITING, EndState.RESERVED, EndState.OPEN, EndState.DONE]


def test_done_is_terminal_and_every_state_can_reach_it() -> None:
    out_of_done = [following for (state, _), following in END_TRANSITIONS.items() if state is EndState.DONE]
    assert out_of_done == [EndState.DONE]  # only a cut applies, and it leaves the end finished
    for state in EndState:
        assert end_after(state, EndEvent.CUT) is EndState.DONE  # the engine can always finish an end
    reachable = {EndState.WAITING} | set(END_TRANSITIONS.values())
    assert reachable == set(EndState)


def test_a_taken_or_finished_end_cannot_be_taken_or_released() -> None:
    assert {EndState.WAITING} == TAKEABLE
    for state in set(EndState) - TAKEABLE:
        for event in (EndEvent.TAKE, EndEvent.RELEASE):
            with pytest.raises(EndStateError):
                end_after(state, event)


def test_the_named_questions_agree_with_the_table() -> None:
    """TAKEABLE: the states a take applies to; CONNECTED: those whose connection can end; FINISHED: those no
    event leads out of."""
    assert {state for state in EndState if (state, EndEvent.TAKE) in END_TRANSITIONS} == TAKEABLE
    assert {state for state in EndState if (state, EndEvent.END) in END_TRANSITIONS} == CONNECTED
    leaving = {state for (state, _), following in END_TRANSITIONS.items() if following is not state}
    assert set(EndState) - leaving == FINISHED


def test_the_states_read_as_the_channel_listing_shows_them() -> None:
    # `iii channels` and `engine::channels::list` show these words; the CLI waits on "waiting".
    assert [state.value for state in EndState] == ["waiting", "reserved", "open", "done"]
    assert f"{EndState.OPEN}" == "open"


def state_assigners(path: Path) -> set[str]:
    """The functions in ``path`` that assign anything's ``writer_state`` or ``reader_state``."""
    found: set[str] = set()
    for function in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            leaves = [leaf for target in targets for leaf in ast.walk(target)]
            if any(
                isinstance(leaf, ast.Attribute) and leaf.attr in ("writer_state", "reader_state") for leaf in leaves
            ):
                found.add(f"{path.relative_to(SRC)}:{function.name}")
    return found


def test_only_the_table_moves_an_end() -> None:
    """No code assigns an end's state but ``Channel.__init__`` (the start) and ``Channel._move`` (the table)."""
    assigners = set().union(*(state_assigners(path) for path in sorted(SRC.rglob("*.py"))))
    assert sorted(assigners) == ["engine/channels.py:__init__", "engine/channels.py:_move"]


def test_a_channel_refuses_a_move_its_table_lacks_and_names_the_end() -> None:
    manager = ChannelManager(default_buffer_frames=4, max_buffer_frames=16, buffer_bytes=1000, ttl_s=60.0)
    channel = manager.create(None, None)
    manager.take(channel, Role.READER)
    with pytest.raises(EndStateError, match="a channel end that is reserved cannot take") as caught:
        manager.take(channel, Role.READER)
    assert caught.value.__notes__ == [f"the reader end of channel {channel.channel_id}"]
    assert channel.reader_state is EndState.RESERVED  # unchanged
