"""The observer table alone (no sockets): states, what owners and watchers are told, and what is refused."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from iii.engine import observers
from iii.engine.observer_records import ObserveRefused, parse_descriptor
from iii.engine.observers import GRACE_S, ObserverTable, Outgoing
from iii.protocol.messages import (
    JSON_NULL,
    FunctionRegistered,
    Observe,
    ObserverAck,
    ObserverAdded,
    ObserveResult,
    ObserverRemoved,
    ObserverStateChanged,
)


class Peer:
    def __init__(self, name: str, *, observe: bool = True) -> None:
        self.worker_id = f"id-{name}"
        self.name = name
        self.write_paused = False
        self.features = frozenset({"observe.v1", "local-dispatch.v1"} if observe else ())

    def send_message(self, payload: bytes) -> None:  # pragma: no cover - the table never sends
        raise AssertionError("the table returns its messages")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.clock = Clock()
        self.table = ObserverTable(self.registered.__contains__, self.clock)
        self.owner = Peer("owner")
        self.watcher = Peer("watcher")

    def register(self, function_id: str, host: Peer | None, observe: dict[str, Any] | None = None) -> Outgoing:
        self.registered.add(function_id)
        raw = msgspec.Raw(msgspec.json.encode(observe)) if observe is not None else JSON_NULL
        return self.table.function_registered(function_id, host, parse_descriptor(function_id, raw))

    def observe(self, observer_id: str, source: dict[str, Any], target: str, watcher: Peer | None = None) -> Outgoing:
        message = Observe(id=observer_id, source=source, target={"function_id": target}, max_fires=None)
        return self.table.observe(watcher or self.watcher, message)


def only(outgoing: Outgoing, kind: type[Any]) -> list[tuple[Any, Any]]:
    return [(host, message) for host, message in outgoing if isinstance(message, kind)]


@pytest.fixture
def setup() -> Setup:
    s = Setup()
    s.register("app::target", s.watcher)
    return s


def test_an_observer_is_active_once_the_owner_accepts_it_and_its_watcher_is_told(setup: Setup) -> None:
    [(owner, registered)] = only(setup.register("shop::charge", setup.owner), FunctionRegistered)
    assert owner is setup.owner and registered.observers == [] and registered.local_dispatch
    sent = setup.observe("o1", {"function_id": "shop::charge", "filters": {"input.n": {"$gt": 1}}}, "app::target")
    [(owner, added)] = only(sent, ObserverAdded)
    assert added.revision == registered.revision + 1
    assert added.observer == {
        "id": "o1",
        "args": {},
        "filters": {"$and": [{"input.n": {"$gt": 1}}]},
        "target": "app::target",
        "capture": ["input", "output", "caller"],
        "on": "success",
    }
    [(watcher, result)] = only(sent, ObserveResult)
    assert watcher is setup.watcher and result.state == "pending"
    changed = setup.table.acked(setup.owner, ObserverAck(function_id="shop::charge", id="o1", revision=added.revision))
    assert [(h, m.state) for h, m in only(changed, ObserverStateChanged)] == [(setup.watcher, "active")]
    assert [o.observer_id for o in setup.table.observed_by("shop::charge")] == ["o1"]


def test_an_owner_that_does_not_speak_observe_is_not_asked(setup: Setup) -> None:
    old = Peer("old-sdk", observe=False)
    assert setup.register("old::fn", old) == []
    sent = setup.observe("o1", {"function_id": "old::fn"}, "app::target")
    assert [m.state for _, m in only(sent, ObserveResult)] == ["active"]
    assert only(sent, ObserverAdded) == []


def test_an_owner_refusal_turns_the_observer_to_error_with_the_owner_code(setup: Setup) -> None:
    setup.register("cron::tick", setup.owner, {"delivery": "owner"})
    setup.observe("o1", {"function_id": "cron::tick", "args": {"expression": "bad"}}, "app::target")
    error = {"code": "INVALID_CRON_EXPRESSION", "message": "bad expression"}
    sent = setup.table.acked(setup.owner, ObserverAck(function_id="cron::tick", id="o1", error=error))
    [(_, changed)] = only(sent, ObserverStateChanged)
    assert (changed.state, changed.reason.code) == ("error", "INVALID_CRON_EXPRESSION")
    assert setup.table.get("o1") is None


def test_an_ack_from_anyone_but_the_owner_is_ignored(setup: Setup) -> None:
    setup.register("shop::charge", setup.owner)
    setup.observe("o1", {"function_id": "shop::charge"}, "app::target")
    intruder = Peer("intruder")
    assert setup.table.acked(intruder, ObserverAck(function_id="shop::charge", id="o1")) == []
    observer = setup.table.get("o1")
    assert observer is not None and observer.state == "pending"


@pytest.mark.parametrize(
    ("source", "target", "code"),
    [
        ({"function_id": "shop::charge"}, "shop::charge", "SELF_TARGET"),
        ({"function_id": "shop::charge", "filters": {"input.op": "insert"}}, "app::target", "INVALID_FILTER"),
        ({"function_id": "shop::charge", "args": {"expression": "* * *"}}, "app::target", "INVALID_ARGS"),
        ({"function_id": "shop::charge", "capture": ["secrets"]}, "app::target", "INVALID_OBSERVER"),
        ({"function_id": "shop::charge", "on": "sometimes"}, "app::target", "INVALID_OBSERVER"),
        ({"function_id": "shop::charge", "namespace": "other"}, "app::target", "NAMESPACE_NOT_FOUND"),
        ({"function_id": ""}, "app::target", "INVALID_OBSERVER"),
    ],
)
def test_a_refused_observer_is_answered_with_error_and_not_kept(
    setup: Setup, source: dict[str, Any], target: str, code: str
) -> None:
    setup.register("shop::charge", setup.owner)
    sent = setup.observe("o1", source, target)
    assert [(m.state, m.error.code) for _, m in only(sent, ObserveResult)] == [("error", code)]
    assert only(sent, ObserverAdded) == [] and setup.table.get("o1") is None


def test_owner_args_are_checked_against_the_args_format_before_the_owner_sees_them(setup: Setup) -> None:
    schema = {"type": "object", "required": ["expression"], "properties": {"expression": {"type": "string"}}}
    setup.register("cron::tick", setup.owner, {"delivery": "owner", "args_format": schema})
    sent = setup.observe("bad", {"function_id": "cron::tick", "args": {"expression": 5}}, "app::target")
    assert [m.error.code for _, m in only(sent, ObserveResult)] == ["INVALID_ARGS"]
    assert only(sent, ObserverAdded) == []
    sent = setup.observe("good", {"function_id": "cron::tick", "args": {"expression": "*/5"}}, "app::target")
    assert [m.observer["args"] for _, m in only(sent, ObserverAdded)] == [{"expression": "*/5"}]


def test_a_descriptor_that_refuses_observers_makes_them_not_observable(setup: Setup) -> None:
    setup.register("secret::fn", setup.owner, {"allow": False})
    sent = setup.observe("o1", {"function_id": "secret::fn"}, "app::target")
    assert [m.error.code for _, m in only(sent, ObserveResult)] == ["NOT_OBSERVABLE"]


@pytest.mark.parametrize(
    "descriptor",
    [{"delivery": "sometimes"}, {"args_format": {"type": "object"}}, {"delivery": "owner", "args_format": {"type": 5}}],
)
def test_an_invalid_descriptor_is_refused(descriptor: dict[str, Any]) -> None:
    with pytest.raises(ObserveRefused) as raised:
        parse_descriptor("f", msgspec.Raw(msgspec.json.encode(descriptor)))
    assert raised.value.code == "INVALID_OBSERVE_DESCRIPTOR"


def test_observers_of_a_function_not_registered_yet_wait_and_go_to_its_owner_when_it_comes(setup: Setup) -> None:
    sent = setup.observe("o1", {"function_id": "late::fn"}, "app::target")
    assert [m.state for _, m in only(sent, ObserveResult)] == ["pending"]
    [(_, registered)] = only(setup.register("late::fn", setup.owner), FunctionRegistered)
    assert [o["id"] for o in registered.observers] == ["o1"]


def test_an_observer_is_suspended_while_its_source_is_away_and_active_again_when_it_returns(setup: Setup) -> None:
    setup.register("shop::charge", setup.owner)
    setup.observe("o1", {"function_id": "shop::charge"}, "app::target")
    setup.table.acked(setup.owner, ObserverAck(function_id="shop::charge", id="o1"))
    setup.registered.discard("shop::charge")
    gone = setup.table.function_removed("shop::charge", setup.owner)
    assert [m.state for _, m in only(gone, ObserverStateChanged)] == ["suspended"]
    new_owner = Peer("owner-2")
    back = setup.register("shop::charge", new_owner)
    [(host, registered)] = only(back, FunctionRegistered)
    assert host is new_owner and [o["id"] for o in registered.observers] == ["o1"]
    accepted = setup.table.acked(new_owner, ObserverAck(function_id="shop::charge", id="o1"))
    assert [m.state for _, m in only(accepted, ObserverStateChanged)] == ["active"]


def test_revisions_of_a_function_only_grow(setup: Setup) -> None:
    revisions = []
    for _, message in setup.register("shop::charge", setup.owner):
        revisions.append(message.revision)
    for name in ("a", "b"):
        for _, message in only(setup.observe(name, {"function_id": "shop::charge"}, "app::target"), ObserverAdded):
            revisions.append(message.revision)
    for _, message in only(setup.table.unobserve(setup.watcher, "a"), ObserverRemoved):
        revisions.append(message.revision)
    for _, message in only(setup.register("shop::charge", setup.owner), FunctionRegistered):
        revisions.append(message.revision)
    assert revisions == sorted(set(revisions)) and len(revisions) == 5


def test_max_fires_disposes_after_the_last_fire_and_both_sides_are_told(setup: Setup) -> None:
    setup.register("shop::charge", setup.owner)
    message = Observe(id="o1", source={"function_id": "shop::charge"}, target={"function_id": "app::target"})
    message.max_fires = 2
    setup.table.observe(setup.watcher, message)
    observer = setup.table.get("o1")
    assert observer is not None
    assert setup.table.fired(observer) == []
    sent = setup.table.fired(observer)
    assert [(m.state, m.reason.code) for _, m in only(sent, ObserverStateChanged)] == [("disposed", "MAX_FIRES")]
    assert [h for h, _ in only(sent, ObserverRemoved)] == [setup.owner]


def test_expiry_and_the_grace_period_of_a_worker_that_left_dispose_on_the_tick(setup: Setup) -> None:
    setup.register("shop::charge", setup.owner)
    message = Observe(id="lease", source={"function_id": "shop::charge"}, target={"function_id": "app::target"})
    message.expires_in_ms = 300
    setup.table.observe(setup.watcher, message)
    other = Peer("other")
    setup.observe("left", {"function_id": "shop::charge"}, "app::target", other)
    assert setup.table.tick() == []
    setup.table.worker_left(other)
    setup.clock.now += 0.3
    expired = setup.table.tick()
    assert [(h, m.reason.code) for h, m in only(expired, ObserverStateChanged)] == [(setup.watcher, "EXPIRED")]
    setup.clock.now += GRACE_S
    gone = setup.table.tick()
    assert only(gone, ObserverStateChanged) == []  # its watcher is gone: nobody to tell
    assert [m.id for _, m in only(gone, ObserverRemoved)] == ["left"]
    assert len(setup.table) == 0


def test_a_replay_is_taken_back_by_the_same_worker_coming_back_and_refused_to_any_other(setup: Setup) -> None:
    setup.register("shop::charge", setup.owner)
    setup.observe("o1", {"function_id": "shop::charge"}, "app::target")
    setup.table.acked(setup.owner, ObserverAck(function_id="shop::charge", id="o1"))
    thief = Peer("thief")
    stolen = setup.observe("o1", {"function_id": "shop::charge"}, "app::target", thief)
    assert [(m.state, m.error.code) for _, m in only(stolen, ObserveResult)] == [("error", "OBSERVER_ID_TAKEN")]
    setup.table.worker_left(setup.watcher)
    assert [m.error.code for _, m in only(setup.observe("o1", {"function_id": "x"}, "y", thief), ObserveResult)] == [
        "OBSERVER_ID_TAKEN"
    ]
    back = Peer("watcher")  # a new connection of the same worker
    replayed = setup.observe("o1", {"function_id": "shop::charge"}, "app::target", back)
    assert [m.state for _, m in only(replayed, ObserveResult)] == ["active"]
    observer = setup.table.get("o1")
    assert observer is not None and observer.watcher is back


def test_unobserve_by_anyone_but_its_watcher_is_ignored(setup: Setup) -> None:
    setup.register("shop::charge", setup.owner)
    setup.observe("o1", {"function_id": "shop::charge"}, "app::target")
    assert setup.table.unobserve(Peer("other"), "o1") == []
    assert setup.table.get("o1") is not None


def test_a_worker_holds_a_bounded_number_of_observers(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observers, "MAX_OBSERVERS_PER_WORKER", 2)
    setup.register("shop::charge", setup.owner)
    for name in ("a", "b"):
        assert [
            m.state for _, m in only(setup.observe(name, {"function_id": "shop::charge"}, "app::target"), ObserveResult)
        ] == ["pending"]
    refused = setup.observe("c", {"function_id": "shop::charge"}, "app::target")
    assert [m.error.code for _, m in only(refused, ObserveResult)] == ["LIMIT_EXCEEDED"]
    setup.table.unobserve(setup.watcher, "a")
    again = setup.observe("c", {"function_id": "shop::charge"}, "app::target")
    assert [m.state for _, m in only(again, ObserveResult)] == ["pending"]
    assert [m.error.code for _, m in only(setup.observe("d", {"function_id": "x"}, "y"), ObserveResult)] == [
        "LIMIT_EXCEEDED"
    ]
    other = Peer("other")  # the bound is per worker
    assert [m.state for _, m in only(setup.observe("e", {"function_id": "x"}, "y", other), ObserveResult)] == [
        "pending"
    ]
