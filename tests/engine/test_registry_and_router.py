"""Function ownership and the table of calls in flight, without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from iii.engine.registry import FunctionEntry, FunctionRegistry
from iii.engine.router import InvocationRouter


@dataclass(eq=False)
class FakeWorker:
    worker_id: str
    name: str = ""
    features: frozenset[str] = frozenset()
    sent: list[bytes] = field(default_factory=list)

    def send_message(self, payload: bytes) -> None:
        self.sent.append(payload)

    def deliver_result(self, *args: object) -> None:
        pass


def test_first_live_owner_keeps_a_function_id() -> None:
    registry = FunctionRegistry()
    a, b = FakeWorker("a"), FakeWorker("b")
    assert registry.register(FunctionEntry("f", owner=a)) is None
    conflict = registry.register(FunctionEntry("f", owner=b))
    assert conflict is not None and conflict.owner is a
    assert registry.register(FunctionEntry("f", owner=a, description="again")) is None  # same owner: update
    assert registry.unregister("f", b) is None  # b withdraws its standby
    assert registry.remove_owner(a) == (["f"], [])
    assert registry.get("f") is None
    assert registry.register(FunctionEntry("f", owner=b)) is None


def test_refused_registrations_stand_by_and_take_over_in_order() -> None:
    """A refused duplicate is kept: when the owner leaves or withdraws, the first standby serves at once."""
    registry = FunctionRegistry()
    a, b, c = FakeWorker("a"), FakeWorker("b"), FakeWorker("c")
    registry.register(FunctionEntry("f", owner=a))
    registry.register(FunctionEntry("g", owner=a))
    assert registry.register(FunctionEntry("f", owner=b)) is not None
    assert registry.register(FunctionEntry("f", owner=c)) is not None
    assert registry.register(FunctionEntry("f", owner=b, description="newer")) is not None  # replaces b's standby
    assert [entry.owner for entry in registry.standbys("f")] == [b, c]

    removed, promoted = registry.remove_owner(a)
    assert sorted(removed) == ["f", "g"]
    assert [(entry.function_id, entry.owner, entry.description) for entry in promoted] == [("f", b, "newer")]
    assert registry.owned_by(b) == {"f"} and registry.get("g") is None
    successor = registry.unregister("f", b)
    assert successor is not None and successor.owner is c
    assert registry.standbys("f") == []
    assert registry.remove_owner(c) == (["f"], [])
    assert registry.get("f") is None


def test_a_departing_standby_is_forgotten_and_reattach_moves_standbys() -> None:
    registry = FunctionRegistry()
    a, b, b2, c = FakeWorker("a"), FakeWorker("b"), FakeWorker("b2"), FakeWorker("c")
    registry.register(FunctionEntry("f", owner=a))
    registry.register(FunctionEntry("f", owner=b))
    registry.register(FunctionEntry("f", owner=c))
    registry.transfer(b, b2)
    assert [entry.owner for entry in registry.standbys("f")] == [b2, c]
    assert registry.remove_owner(b2) == ([], [])
    _, promoted = registry.remove_owner(a)
    assert [entry.owner for entry in promoted] == [c]


def test_builtins_cannot_be_taken_over() -> None:
    registry = FunctionRegistry()
    registry.add_builtin("engine::x", lambda caller, data: None, "x")
    assert registry.register(FunctionEntry("engine::x", owner=FakeWorker("a"))) is not None
    assert registry.standbys("engine::x") == []  # nobody waits for a builtin


def test_take_over_puts_the_current_owner_first_in_line() -> None:
    """A cluster's registry names another engine: its link serves the id, the local worker stands by first and
    serves again when the link lets the id go."""
    registry = FunctionRegistry()
    local, waiting, link = FakeWorker("local"), FakeWorker("waiting"), FakeWorker("link")
    changes: list[None] = []
    registry.change_listeners.append(lambda: changes.append(None))
    registry.register(FunctionEntry("f", owner=local))
    registry.register(FunctionEntry("f", owner=waiting))
    demoted = registry.take_over(FunctionEntry("f", owner=link))
    assert demoted is not None and demoted.owner is local
    current = registry.get("f")
    assert current is not None and current.owner is link
    assert [entry.owner for entry in registry.standbys("f")] == [local, waiting]
    assert registry.owned_by(local) == set() and registry.owned_by(link) == {"f"}
    assert len(changes) == 2  # the first registration and the take-over
    successor = registry.unregister("f", link)
    assert successor is not None and successor.owner is local
    registry.add_builtin("engine::x", lambda caller, data: None, "x")
    with pytest.raises(ValueError):
        registry.take_over(FunctionEntry("engine::x", owner=link))


def test_transfer_moves_ownership_to_a_reattached_connection() -> None:
    registry = FunctionRegistry()
    old, new = FakeWorker("old"), FakeWorker("new")
    registry.register(FunctionEntry("f", owner=old))
    assert registry.transfer(old, new) == ["f"]
    entry = registry.get("f")
    assert entry is not None and entry.owner is new
    assert registry.remove_owner(old) == ([], [])


def test_results_are_accepted_only_from_the_target() -> None:
    router = InvocationRouter()
    caller, target, intruder = FakeWorker("c"), FakeWorker("t"), FakeWorker("i")
    call = router.start("f", target, caller, "caller-id", timeout_s=30)
    assert call.dispatch_id != "caller-id"
    assert router.complete(call.dispatch_id, intruder) is None
    assert router.complete(call.dispatch_id, target) is call
    assert router.complete(call.dispatch_id, target) is None  # only once
    assert len(router) == 0


def test_dispatch_ids_are_unique_and_uuid_shaped() -> None:
    router = InvocationRouter()
    target = FakeWorker("t")
    ids = {router.start("f", target, None, None, 30).dispatch_id for _ in range(1000)}
    assert len(ids) == 1000
    sample = next(iter(ids))
    assert [len(part) for part in sample.split("-")] == [8, 4, 4, 4, 12]


def test_target_loss_returns_its_calls_and_caller_loss_forgets_its_own() -> None:
    router = InvocationRouter()
    c1, c2, t1, t2 = FakeWorker("c1"), FakeWorker("c2"), FakeWorker("t1"), FakeWorker("t2")
    a = router.start("f", t1, c1, "a", 30)
    b = router.start("f", t1, c2, "b", 30)
    c = router.start("g", t2, c1, "c", 30)
    assert {call.caller_invocation_id for call in router.take_target(t1)} == {"a", "b"}
    assert len(router.drop_caller(c1)) == 1
    assert len(router) == 0
    assert router.complete(c.dispatch_id, t2) is None
    assert a.dispatch_id != b.dispatch_id


def test_calls_expire_at_their_timeout() -> None:
    now = [100.0]
    router = InvocationRouter(clock=lambda: now[0])
    target, caller = FakeWorker("t"), FakeWorker("c")
    short = router.start("f", target, caller, "short", timeout_s=1)
    router.start("f", target, caller, "long", timeout_s=10)
    now[0] = 100.5
    assert router.take_expired() == []
    now[0] = 101.1
    assert router.take_expired() == [short]
    assert router.pending_for_target(target) == 1


def test_reattach_moves_calls_both_ways() -> None:
    router = InvocationRouter()
    old, new, other = FakeWorker("old"), FakeWorker("new"), FakeWorker("other")
    hosted = router.start("f", old, other, "x", 30)
    made = router.start("g", other, old, "y", 30)
    router.retarget(old, new)
    router.recall(old, new)
    assert router.complete(hosted.dispatch_id, old) is None
    assert router.complete(hosted.dispatch_id, new) is hosted
    assert made.caller is new
