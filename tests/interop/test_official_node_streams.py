"""The official Node SDK (npm ``iii-sdk@0.22.1``) uses the engine's streams unchanged (issue 16).

A worker on the official Node SDK (``node/streams.mjs``) calls every ``stream::*`` function with the SDK's own
``trigger``, binds its functions to the ``stream`` trigger type with the SDK's ``registerTrigger`` and is called
with the reference's payload for the changes that our Python SDK and the official Python SDK (PyPI ``iii-sdk``
0.25.0, ``official_python_modules.py``) make, and serves a custom stream made with the SDK's ``createStream``.

The official browser SDK is not on npm; it speaks the same worker protocol to the RBAC worker listener, and a page
subscribes to a stream group by registering a function and binding it to ``stream``. The last test is that path
with the official Node SDK as the page: admitted by an auth function at the RBAC port, it hears every change of
its group, in order, and nothing of the others.

Nothing here sleeps: the test waits for the engine to list the registrations (one call after another) and for
the workers' output lines (with timeouts). Every test ends with the engine's log free of warnings and errors.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iii import III, InitOptions, register_worker
from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

READY_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 30.0
EVENT_TIMEOUT_S = 10.0
MAX_LIST_ATTEMPTS = 500
"""Listings asked for while waiting for registrations to reach the engine (each one a round trip)."""
PYTHON_MODULES_WORKER = Path(__file__).resolve().parent / "official_python_modules.py"
PAGE_TOKEN = "page-session-27182"
RBAC_CONFIG = """
modules = "stream"
[rbac]
auth_function_id = "trusted::auth"
expose_functions = ['match("stream::list")']
"""

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine


@dataclass
class SdkWorker:
    """A running worker of ``node/streams.mjs`` or ``official_python_modules.py``: calls made by its SDK's
    ``trigger`` (one per stdin line) and the calls it got (EVENT and CUSTOM lines)."""

    process: WorkerProcess
    engine: EngineProcess
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def call(self, function_id: str, payload: Any) -> dict[str, Any]:
        """The RESULT record of ``function_id`` called by the worker's SDK."""
        call_id = next(self._ids)
        self.process.send({"id": call_id, "function_id": function_id, "payload": payload})
        return self.expect("RESULT", RESULT_TIMEOUT_S, lambda record: record["id"] == call_id)

    def result(self, function_id: str, payload: Any) -> Any:
        """The result of a call that must succeed."""
        record = self.call(function_id, payload)
        assert record["ok"], f"{function_id} failed: {record}\n{self.diagnostics()}"
        return record["result"]

    def events(self, function_id: str, count: int) -> list[dict[str, Any]]:
        """The next ``count`` payloads the bound ``function_id`` was called with, in the order of the calls."""
        return [
            self.expect("EVENT", EVENT_TIMEOUT_S, lambda record: record["function_id"] == function_id)["data"]
            for _ in range(count)
        ]

    def expect(self, prefix: str, timeout_s: float, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        try:
            return self.process.expect(prefix, timeout_s, matches)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- engine log:\n{tail(self.engine.log_text(), 60)}") from None

    def diagnostics(self) -> str:
        return f"{self.process.output()}\n--- engine log:\n{tail(self.engine.log_text(), 60)}"


StartNode = Callable[..., SdkWorker]


@pytest.fixture
def streams_engine() -> Iterator[EngineProcess]:
    """An engine with the stream module alone."""
    with EngineProcess(["--modules", "stream", "--http-port", "-1"]) as engine:
        yield engine


@pytest.fixture
def rbac_engine(tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine with the stream module and an RBAC worker listener admitting through ``trusted::auth``."""
    config = tmp_path / "engine.toml"
    config.write_text(RBAC_CONFIG)
    with EngineProcess(["--config", str(config), "--rbac-port", "0", "--http-port", "-1"]) as engine:
        yield engine


@pytest.fixture
def workers() -> Iterator[ExitStack]:
    """Stops every worker started through it at the end of the test."""
    with ExitStack() as stack:
        yield stack


def start_node(workers: ExitStack, node_scripts: Path, engine: EngineProcess, plan: dict[str, Any]) -> SdkWorker:
    """A ``node/streams.mjs`` worker of ``plan`` (see the script), once it printed READY."""
    env = child_env(engine, {"III_RBAC_WORKER_URL": engine.rbac_url})
    argv = ["node", "streams.mjs", json.dumps(plan)]
    process = workers.enter_context(WorkerProcess("official node streams worker", argv, cwd=node_scripts, env=env))
    worker = SdkWorker(process, engine)
    try:
        process.wait_ready(READY_TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text(), 60)}") from None
    return worker


def start_official_python(workers: ExitStack, python: PythonEnv, engine: EngineProcess) -> SdkWorker:
    """An official Python SDK worker (``official_python_modules.py``, no bindings) that makes calls on request."""
    argv: list[str | Path] = [python.python, PYTHON_MODULES_WORKER, json.dumps({"worker_name": "py", "bindings": []})]
    process = workers.enter_context(
        WorkerProcess("official python worker", argv, cwd=python.root, env=child_env(engine))
    )
    process.wait_ready(READY_TIMEOUT_S)
    return SdkWorker(process, engine)


def wait_registered(
    client: III, *, functions: AbstractSet[str] = frozenset(), bindings: AbstractSet[str] = frozenset()
) -> None:
    """Ask the engine until it serves ``functions`` and has an active binding for each function of ``bindings``."""
    for _ in range(MAX_LIST_ATTEMPTS):
        listed = client.trigger({"function_id": "engine::functions::list", "payload": {}})
        served = {row["function_id"] for row in listed["functions"]}
        rows = client.trigger({"function_id": "engine::registered-triggers::list", "payload": {}})
        active = {row["function_id"] for row in rows["registered_triggers"] if row["status"] == "active"}
        if functions <= served and bindings <= active:
            return
    raise AssertionError(f"not registered: functions {functions - served}, bindings {bindings - active}")


def change(stream: str, group: str, item: str | None, kind: str, data: Any) -> dict[str, Any]:
    """The reference's payload of a ``stream`` trigger call, without its timestamp."""
    return {"type": "stream", "streamName": stream, "groupId": group, "id": item, "event": {"type": kind, "data": data}}


def without_timestamps(events: list[dict[str, Any]], since_ms: int) -> list[dict[str, Any]]:
    """``events`` without their ``timestamp``, which must be milliseconds since the epoch, from ``since_ms`` on."""
    now_ms = time.time_ns() // 1_000_000
    for event in events:
        assert isinstance(event["timestamp"], int) and since_ms <= event["timestamp"] <= now_ms, event
    return [{name: value for name, value in event.items() if name != "timestamp"} for event in events]


def test_the_node_sdk_calls_every_stream_function(
    streams_engine: EngineProcess, node_scripts: Path, workers: ExitStack
) -> None:
    """Proves ``stream::set/get/update/list/list_groups/list_all/send/delete`` called with the official Node SDK's
    ``trigger`` answer in the reference's shapes, as the SDK's types (``StreamSetResult``, ``StreamUpdateResult``
    with per-op ``errors``, ``StreamDeleteResult``) read them: a missing item is ``undefined``, as the SDK's own
    tests expect; a malformed call fails with the SDK's error carrying the reference's code."""
    node = start_node(workers, node_scripts, streams_engine, {"worker_name": "node-streams"})
    item = {"stream_name": "todos", "group_id": "alice", "item_id": "t1"}
    first, second = {"title": "milk", "done": False, "tags": []}, {"title": "milk", "done": True, "tags": ["home"]}

    assert node.result("stream::set", {**item, "data": first}) == {"old_value": None, "new_value": first}
    assert node.result("stream::set", {**item, "data": second}) == {"old_value": first, "new_value": second}
    assert node.result("stream::get", item) == second
    missing = node.call("stream::get", {**item, "item_id": "nope"})
    assert (missing["ok"], missing["kind"]) == (True, "undefined"), missing

    ops = [
        {"type": "set", "path": "done", "value": False},
        {"type": "append", "path": "tags", "value": "urgent"},
        {"type": "merge", "path": ["meta", "by"], "value": {"name": "alice"}},
        {"type": "append", "path": "meta", "value": 1},  # an object: append.type_mismatch, the rest applies
    ]
    updated = node.result("stream::update", {**item, "ops": ops})
    third = {"title": "milk", "done": False, "tags": ["home", "urgent"], "meta": {"by": {"name": "alice"}}}
    assert (updated["old_value"], updated["new_value"]) == (second, third)
    [error] = updated["errors"]
    assert error["op_index"] == 3 and error["code"] == "append.type_mismatch" and error["message"]

    node.result("stream::set", {**item, "item_id": "t0", "data": {"title": "eggs"}})
    node.result("stream::set", {**item, "group_id": "bob", "data": {"title": "tea"}})
    node.result("stream::set", {"stream_name": "notes", "group_id": "alice", "item_id": "n1", "data": "hi"})
    assert node.result("stream::list", {"stream_name": "todos", "group_id": "alice"}) == [{"title": "eggs"}, third]
    assert node.result("stream::list_groups", {"stream_name": "todos"}) == ["alice", "bob"]
    assert node.result("stream::list_all", {}) == {
        "stream": [{"id": "notes", "groups": ["alice"]}, {"id": "todos", "groups": ["alice", "bob"]}],
        "count": 2,
    }
    sent = node.call("stream::send", {"stream_name": "todos", "group_id": "alice", "type": "typing", "data": {}})
    assert (sent["ok"], sent["kind"]) == (True, "undefined"), sent

    assert node.result("stream::delete", item) == {"old_value": third}
    assert node.call("stream::get", item)["kind"] == "undefined"
    assert node.result("stream::delete", item) == {"old_value": None}  # deleting nothing is no error
    assert node.result("stream::list", {"stream_name": "todos", "group_id": "alice"}) == [{"title": "eggs"}]

    refused = node.call("stream::set", {"stream_name": "todos", "group_id": "alice"})
    assert not refused["ok"] and refused["error"]["code"] == "deserialization_error", refused
    assert not engine_complaints(streams_engine), "\n".join(engine_complaints(streams_engine))


@pytest.mark.parametrize("writer", ["ours", "official-python"])
def test_stream_triggers_of_a_node_worker_fire_on_changes_from_the_python_sdks(
    streams_engine: EngineProcess, node_scripts: Path, workers: ExitStack, request: pytest.FixtureRequest, writer: str
) -> None:
    """Proves functions the official Node SDK binds to ``stream`` (the whole stream, one group, one item) are
    called with the reference's payload (``type: "stream"``, ``streamName``, ``groupId``, ``id``, a millisecond
    ``timestamp`` and ``event``: create and update with the new value, delete with the old one, ``event`` for
    ``stream::send``) for the changes our Python SDK or the official Python SDK make, each binding the changes
    its config selects, in the order they were made, and nothing else."""
    engine = streams_engine
    bindings = [
        {"function_id": "watch::stream", "config": {"stream_name": "orders"}},
        {"function_id": "watch::group", "config": {"stream_name": "orders", "group_id": "eu"}},
        {"function_id": "watch::item", "config": {"stream_name": "orders", "group_id": "eu", "item_id": "o1"}},
    ]
    node = start_node(workers, node_scripts, engine, {"worker_name": "node-watcher", "bindings": bindings})
    with register_worker(engine.url, InitOptions(worker_name="writer")) as ours:
        wait_registered(ours, bindings={"watch::stream", "watch::group", "watch::item"})
        if writer == "ours":

            def call(function_id: str, payload: Any) -> Any:
                return ours.trigger({"function_id": function_id, "payload": payload})

        else:
            official = start_official_python(workers, request.getfixturevalue("official_python"), engine)
            call = official.result

        since_ms = time.time_ns() // 1_000_000
        o1 = {"stream_name": "orders", "group_id": "eu", "item_id": "o1"}
        call("stream::set", {**o1, "data": {"qty": 1}})
        call("stream::set", {**o1, "data": {"qty": 2}})
        call("stream::update", {**o1, "ops": [{"type": "increment", "path": "qty", "by": 3}]})
        call("stream::set", {**o1, "item_id": "o2", "data": {"qty": 9}})
        call("stream::set", {**o1, "group_id": "us", "data": {"qty": 4}})
        call("stream::set", {**o1, "stream_name": "invoices", "data": {"qty": 5}})  # another stream: no binding
        call("stream::delete", o1)
        call("stream::delete", o1)  # nothing to delete: nothing fires
        call("stream::send", {"stream_name": "orders", "group_id": "eu", "type": "shipped", "data": {"n": 1}})

    created, updated, incremented = (
        change("orders", "eu", "o1", "create", {"qty": 1}),
        change("orders", "eu", "o1", "update", {"qty": 2}),
        change("orders", "eu", "o1", "update", {"qty": 5}),
    )
    o2 = change("orders", "eu", "o2", "create", {"qty": 9})
    us = change("orders", "us", "o1", "create", {"qty": 4})
    deleted = change("orders", "eu", "o1", "delete", {"qty": 5})
    sent = {
        "type": "stream",
        "streamName": "orders",
        "groupId": "eu",
        "id": None,
        "event": {"type": "event", "event": {"type": "shipped", "data": {"n": 1}}},
    }
    heard = {
        "watch::stream": [created, updated, incremented, o2, us, deleted, sent],
        "watch::group": [created, updated, incremented, o2, deleted, sent],
        "watch::item": [created, updated, incremented, deleted],
    }
    for function_id, expected in heard.items():
        got = without_timestamps(node.events(function_id, len(expected)), since_ms)
        assert got == expected, f"{function_id}\n{node.diagnostics()}"
    assert node.process.held("EVENT") == []  # no call of a bound function beyond those, read past meanwhile
    assert not engine_complaints(engine), "\n".join(engine_complaints(engine))


def test_a_custom_stream_of_the_node_sdk_serves_the_stream_functions(
    streams_engine: EngineProcess, node_scripts: Path, workers: ExitStack
) -> None:
    """Proves a stream made with the official Node SDK's ``createStream`` answers ``stream::get``, ``set``,
    ``list``, ``list_groups`` and ``delete`` for its name, called by another worker (our SDK): each call reaches
    the Node worker's stream with the payload the SDK's ``IStream`` types describe, its answer is the caller's,
    the engine's own store is left alone, and the ``stream`` trigger fires from the custom stream's answers."""
    engine = streams_engine
    plan = {
        "worker_name": "node-custom",
        "custom_streams": ["presence"],
        "bindings": [{"function_id": "watch::presence", "config": {"stream_name": "presence"}}],
    }
    node = start_node(workers, node_scripts, engine, plan)
    custom = {f"stream::{op}(presence)" for op in ("get", "set", "delete", "list", "list_groups")}
    with register_worker(engine.url, InitOptions(worker_name="caller")) as ours:
        wait_registered(ours, functions=custom, bindings={"watch::presence"})

        def call(function_id: str, payload: Any) -> Any:
            return ours.trigger({"function_id": function_id, "payload": payload})

        def served(op: str, payload: dict[str, Any]) -> None:
            record = node.expect("CUSTOM", RESULT_TIMEOUT_S, lambda record: record["op"] == op)
            assert record == {"stream": "presence", "op": op, "input": payload}

        since_ms = time.time_ns() // 1_000_000
        ada = {"stream_name": "presence", "group_id": "room-1", "item_id": "ada"}
        assert call("stream::set", {**ada, "data": {"online": True}}) == {
            "old_value": None,
            "new_value": {"online": True},
        }
        served("set", {**ada, "data": {"online": True}})
        assert call("stream::set", {**ada, "data": {"online": False}}) == {
            "old_value": {"online": True},
            "new_value": {"online": False},
        }
        served("set", {**ada, "data": {"online": False}})
        assert call("stream::get", ada) == {"online": False}
        served("get", ada)
        assert call("stream::get", {**ada, "item_id": "bob"}) is None
        served("get", {**ada, "item_id": "bob"})
        call("stream::set", {**ada, "group_id": "room-2", "data": {"online": True}})
        served("set", {**ada, "group_id": "room-2", "data": {"online": True}})
        assert call("stream::list", {"stream_name": "presence", "group_id": "room-1"}) == [{"online": False}]
        served("list", {"stream_name": "presence", "group_id": "room-1"})
        assert call("stream::list_groups", {"stream_name": "presence"}) == ["room-1", "room-2"]
        served("list_groups", {"stream_name": "presence"})
        assert call("stream::list_all", {}) == {"stream": [], "count": 0}  # the engine's store holds nothing
        assert call("stream::delete", ada) == {"old_value": {"online": False}}
        served("delete", ada)
        assert call("stream::get", ada) is None

    events = without_timestamps(node.events("watch::presence", 4), since_ms)
    assert events == [
        change("presence", "room-1", "ada", "create", {"online": True}),
        change("presence", "room-1", "ada", "update", {"online": False}),
        change("presence", "room-2", "ada", "create", {"online": True}),
        change("presence", "room-1", "ada", "delete", {"online": False}),
    ]
    assert not engine_complaints(engine), "\n".join(engine_complaints(engine))


def test_node_workers_at_the_rbac_listener_hear_every_change_of_their_group_in_order(
    rbac_engine: EngineProcess, node_scripts: Path, workers: ExitStack
) -> None:
    """Proves the browser SDK's way of subscribing works, with the official Node SDK in the pages' place: a
    worker admitted at the RBAC listener by an auth function that reads its headers registers a function
    (under the prefix the auth function gives) and binds it to ``stream`` for one group; every change of that
    group made on the engine's own port reaches it, in the order the changes were made, and no change of
    another group does, even while another page bound before it has not answered its first change yet (that
    page then gets the rest in order too). A page may read the group (``stream::list``, exposed) and nothing
    it is not allowed."""
    engine = rbac_engine
    admitted: list[dict[str, Any]] = []

    def auth(data: dict[str, Any]) -> dict[str, Any]:
        if data["headers"].get("x-page-token") != PAGE_TOKEN:
            raise ValueError("unknown page")
        admitted.append(data["headers"])
        prefix = data["headers"]["x-page"]
        return {"function_registration_prefix": prefix, "allowed_trigger_types": ["stream"]}

    with register_worker(engine.url, InitOptions(worker_name="trusted")) as trusted:
        assert trusted.register_function("trusted::auth", auth).wait_active(10)
        room = {"stream_name": "chat", "group_id": "room-1"}
        trusted.trigger({"function_id": "stream::set", "payload": {**room, "item_id": "m0", "data": {"text": "hi"}}})

        def page_plan(name: str, hold_first: bool) -> dict[str, Any]:
            return {
                "worker_name": name,
                "url_env": "III_RBAC_WORKER_URL",
                "headers": {"x-page-token": PAGE_TOKEN, "x-page": name},
                "bindings": [{"function_id": "chat::changed", "config": room, "hold_first": hold_first}],
            }

        slow = start_node(workers, node_scripts, engine, page_plan("slow-page", hold_first=True))
        wait_registered(trusted, bindings={"slow-page::chat::changed"})  # bound first: a change reaches it first
        page = start_node(workers, node_scripts, engine, page_plan("page", hold_first=False))
        wait_registered(trusted, bindings={"page::chat::changed"})
        assert page.result("stream::list", {"stream_name": "chat", "group_id": "room-1"}) == [{"text": "hi"}]
        forbidden = page.call("stream::set", {**room, "item_id": "x", "data": 1})
        assert not forbidden["ok"] and forbidden["error"]["code"] == "FORBIDDEN", forbidden

        since_ms = time.time_ns() // 1_000_000
        expected = []
        for n in range(1, 41):
            item = f"m{n % 7}"
            other = {"stream_name": "chat", "group_id": "room-2", "item_id": item}
            trusted.trigger({"function_id": "stream::set", "payload": {**other, "data": {"n": n}}})
            if n % 5 == 0:
                old = trusted.trigger({"function_id": "stream::delete", "payload": {**room, "item_id": item}})
                if old["old_value"] is not None:
                    expected.append(change("chat", "room-1", item, "delete", old["old_value"]))
                continue
            result = trusted.trigger(
                {"function_id": "stream::set", "payload": {**room, "item_id": item, "data": {"n": n}}}
            )
            kind = "create" if result["old_value"] is None else "update"
            expected.append(change("chat", "room-1", item, kind, {"n": n}))

        got = without_timestamps(page.events("chat::changed", len(expected)), since_ms)
        assert got == expected, page.diagnostics()
        assert without_timestamps(slow.events("chat::changed", 1), since_ms) == expected[:1]
        slow.process.send({"release": True})
        slow_got = without_timestamps(slow.events("chat::changed", len(expected) - 1), since_ms)
        assert slow_got == expected[1:], slow.diagnostics()
    assert page.process.held("EVENT") == [] and slow.process.held("EVENT") == []
    assert len(admitted) == 2
    assert PAGE_TOKEN not in engine.log_text()
    assert not engine_complaints(engine), "\n".join(engine_complaints(engine))
