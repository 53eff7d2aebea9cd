"""The official SDKs drive the engine's modules unchanged: state, pub/sub and cron, from Python and from Node.

A worker on the official Python SDK (PyPI ``iii-sdk`` 0.25.0, ``official_python_modules.py``) or on the official
Node SDK (npm ``iii-sdk@0.22.1``, ``node/modules.mjs``) binds its functions with the SDK's own
``register_trigger`` / ``registerTrigger`` to the trigger types ``state``, ``subscribe`` and ``cron``, and calls
``state::*`` and ``publish`` with the SDK's own ``trigger``, one call per line the test writes to its stdin.
Each call's result and each call of a bound function come back as lines the test waits for (with timeouts);
nothing here sleeps. The assertions are on what users of each SDK read: the results and payloads as the
reference engine shapes them, ``StateEventType`` as each SDK defines it, the cron times as each SDK's
language parses them, ``undefined`` for a missing key in Node as the Node SDK's own tests expect.

Every test runs on a fresh engine and ends with the engine's log free of warnings and errors.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

SDKS = ("python", "node")
READY_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 30.0
EVENT_TIMEOUT_S = 10.0
CRON_EVENT_TIMEOUT_S = 5.0
"""An every-second job fires within about a second; five leave room for a loaded machine."""

PYTHON_MODULES_WORKER = Path(__file__).resolve().parent / "official_python_modules.py"

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine


@dataclass
class ModuleWorker:
    """A running official-SDK worker of ``official_python_modules.py`` or ``node/modules.mjs``."""

    sdk: str
    process: WorkerProcess
    engine: EngineProcess
    ready: dict[str, Any]
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def call(self, function_id: str, payload: Any, queue: str | None = None) -> dict[str, Any]:
        """Have the worker call ``function_id`` with its SDK's ``trigger`` (through ``queue`` with the SDK's
        ``TriggerAction.Enqueue`` when given); its ``RESULT`` record."""
        call_id = next(self._ids)
        command = {"id": call_id, "function_id": function_id, "payload": payload}
        if queue is not None:
            command["queue"] = queue
        self.process.send(command)
        return self.expect("RESULT", RESULT_TIMEOUT_S, lambda record: record["id"] == call_id)

    def result(self, function_id: str, payload: Any, queue: str | None = None) -> Any:
        """The result of a call that must succeed."""
        record = self.call(function_id, payload, queue)
        assert record["ok"], f"{function_id} failed: {record}\n{self.diagnostics()}"
        return record["result"]

    def event(
        self, function_id: str, matches: Callable[[Any], bool] = lambda data: True, timeout_s: float = EVENT_TIMEOUT_S
    ) -> dict[str, Any]:
        """The earliest call of the bound ``function_id`` whose payload ``matches``, as its EVENT record."""
        return self.expect(
            "EVENT", timeout_s, lambda record: record["function_id"] == function_id and matches(record["data"])
        )

    def unclaimed_events(self) -> list[dict[str, Any]]:
        """The calls of bound functions that arrived and that no :meth:`event` took."""
        return self.process.held("EVENT")

    def binding_id(self, function_id: str) -> str:
        """The engine's id of the function's only binding, from the READY listing."""
        [row] = [row for row in self.ready["registered_triggers"] if row["function_id"] == function_id]
        binding_id: str = row["id"]
        return binding_id

    def expect(self, prefix: str, timeout_s: float, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        try:
            return self.process.expect(prefix, timeout_s, matches)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- engine log:\n{tail(self.engine.log_text(), 60)}") from None

    def diagnostics(self) -> str:
        return f"{self.process.output()}\n--- engine log:\n{tail(self.engine.log_text(), 60)}"


StartWorker = Callable[..., ModuleWorker]


@pytest.fixture
def start_worker(engine: EngineProcess, request: pytest.FixtureRequest) -> Iterator[StartWorker]:
    """``start_worker(sdk, bindings)``: an official-SDK worker on ``engine`` with those bindings active.

    ``bindings`` are ``(function_id, trigger_type, config)``. Every worker is stopped at the end, after which
    the engine's log must hold no warning or error.
    """
    with ExitStack() as stack:
        names = itertools.count()

        def start(sdk: str, bindings: list[tuple[str, str, dict[str, Any]]]) -> ModuleWorker:
            plan = {
                "worker_name": f"interop-modules-{sdk}-{next(names)}",
                "bindings": [{"function_id": f, "type": t, "config": c} for f, t, c in bindings],
            }
            if sdk == "python":
                python: PythonEnv = request.getfixturevalue("official_python")
                argv: list[str | Path] = [python.python, PYTHON_MODULES_WORKER, json.dumps(plan)]
                cwd = python.root
            else:
                scripts: Path = request.getfixturevalue("node_scripts")
                argv = ["node", "modules.mjs", json.dumps(plan)]
                cwd = scripts
            process = stack.enter_context(
                WorkerProcess(f"official {sdk} modules worker", argv, cwd=cwd, env=child_env(engine))
            )
            try:
                ready = process.wait_ready(READY_TIMEOUT_S)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text(), 60)}") from None
            return ModuleWorker(sdk, process, engine, ready)

        yield start
    complaints = engine_complaints(engine)
    assert not complaints, "engine complained:\n" + "\n".join(complaints)


# ---- state functions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
def test_state_functions_answer_as_the_reference(start_worker: StartWorker, sdk: str) -> None:
    """Proves ``state::set/get/update/list/list_groups/delete`` called through an official SDK answer with the
    reference engine's shapes: set gives ``{old_value, new_value}`` (``old_value`` null when created), get the
    value (a missing key is ``None`` in Python and ``undefined`` in Node, as the Node SDK's own tests expect),
    update applies ``set``/``increment``/``append``/``merge``/``remove`` ops in order and reports an op that
    cannot apply in ``errors`` with the reference's code, list the scope's values, list_groups
    ``{"groups": [...]}``, delete the deleted value; a malformed request fails with the SDK's error carrying
    the reference's code."""
    worker = start_worker(sdk, [])
    scope = f"interop-{sdk}-state"
    ada = {"name": "Ada", "count": 0, "tags": []}
    ada2 = {"name": "Ada", "count": 1, "tags": ["math"], "meta": {"born": 1815}}

    assert worker.result("state::set", {"scope": scope, "key": "ada", "value": ada}) == {
        "old_value": None,
        "new_value": ada,
    }
    assert worker.result("state::set", {"scope": scope, "key": "ada", "value": ada2}) == {
        "old_value": ada,
        "new_value": ada2,
    }
    found = worker.call("state::get", {"scope": scope, "key": "ada"})
    assert (found["ok"], found["kind"], found["result"]) == (True, "value", ada2)
    missing = worker.call("state::get", {"scope": scope, "key": "nobody"})
    assert missing["ok"] and missing["result"] is None
    assert missing["kind"] == ("undefined" if sdk == "node" else "null")

    ops = [
        {"type": "set", "path": "count", "value": 5},
        {"type": "increment", "path": "count", "by": 2},
        {"type": "append", "path": "tags", "value": "logic"},
        {"type": "append", "path": "name", "value": " Lovelace"},
        {"type": "merge", "path": "meta", "value": {"died": 1852}},
        {"type": "remove", "path": "count"},
        {"type": "set", "path": "count", "value": 7},
        {"type": "append", "path": "meta", "value": 1},
    ]
    updated = worker.result("state::update", {"scope": scope, "key": "ada", "ops": ops})
    ada3 = {"name": "Ada Lovelace", "count": 7, "tags": ["math", "logic"], "meta": {"born": 1815, "died": 1852}}
    assert updated["old_value"] == ada2
    assert updated["new_value"] == ada3
    [error] = updated["errors"]
    assert error["op_index"] == 7 and error["code"] == "append.type_mismatch" and error["message"]
    assert worker.result("state::get", {"scope": scope, "key": "ada"}) == ada3

    bob = {"name": "Bob", "count": 1}
    worker.result("state::set", {"scope": scope, "key": "bob", "value": bob})
    listed = worker.result("state::list", {"scope": scope})
    assert sorted(listed, key=lambda value: value["name"]) == [ada3, bob]
    assert scope in worker.result("state::list_groups", {})["groups"]

    assert worker.result("state::delete", {"scope": scope, "key": "ada"}) == ada3
    assert worker.result("state::get", {"scope": scope, "key": "ada"}) is None
    assert worker.result("state::delete", {"scope": scope, "key": "ada"}) is None  # deleting nothing is no error
    assert worker.result("state::list", {"scope": scope}) == [bob]

    refused = worker.call("state::update", {"scope": scope, "key": "bob", "ops": [{"type": "explode"}]})
    assert not refused["ok"] and refused["error"]["code"] == "deserialization_error", refused
    assert worker.result("state::get", {"scope": scope, "key": "bob"}) == bob


# ---- queues ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
def test_enqueue_and_durable_topics_through_the_sdks_own_api(start_worker: StartWorker, sdk: str) -> None:
    """Proves the SDK's ``TriggerAction.Enqueue`` gets a ``messageReceiptId`` at once and the function is called
    with the payload afterwards; a ``durable:subscriber`` binding made with the SDK's ``register_trigger`` gets
    what ``iii::durable::publish`` publishes to its topic; an unknown queue fails with ``enqueue_error``."""
    worker = start_worker(sdk, [("interop::queued", "durable:subscriber", {"topic": f"interop-{sdk}-orders"})])

    receipt = worker.result("interop::queued", {"job": 1}, queue="default")
    assert set(receipt) == {"messageReceiptId"} and len(receipt["messageReceiptId"]) == 36
    assert worker.event("interop::queued", lambda data: data == {"job": 1})

    published = worker.call("iii::durable::publish", {"topic": f"interop-{sdk}-orders", "data": {"id": 7}})
    assert published["ok"] and published["result"] is None, published
    assert worker.event("interop::queued", lambda data: data == {"id": 7})

    refused = worker.call("interop::queued", {"job": 2}, queue="no-such-queue")
    assert not refused["ok"] and refused["error"]["code"] == "enqueue_error", refused
    assert "no-such-queue" in refused["error"]["message"]


# ---- the state trigger type -------------------------------------------------------------------------------


def state_event(event_type: str, scope: str, key: str, old: Any, new: Any) -> dict[str, Any]:
    """The reference's payload of a ``state`` trigger call."""
    return {"type": "state", "event_type": event_type, "scope": scope, "key": key, "old_value": old, "new_value": new}


@pytest.mark.parametrize("sdk", SDKS)
def test_state_bindings_fire_on_the_changes_their_scope_and_key_select(start_worker: StartWorker, sdk: str) -> None:
    """Proves functions bound with the official SDK to ``state`` are called with the reference's event for each
    change their config selects: ``{scope, key}`` for that key only, ``{scope}`` for every key of the scope,
    ``{}`` for every change; the SDK's own ``StateEventType`` names the event (created, updated, deleted), and
    ``old_value``/``new_value`` are the values before and after. No binding hears a change it did not select."""
    scope, other_scope = f"interop-{sdk}-watched", f"interop-{sdk}-elsewhere"
    worker = start_worker(
        sdk,
        [
            ("interop.state.on_key", "state", {"scope": scope, "key": "k"}),
            ("interop.state.on_scope", "state", {"scope": scope}),
            ("interop.state.on_any", "state", {}),
        ],
    )
    everyone = ("interop.state.on_key", "interop.state.on_scope", "interop.state.on_any")

    def expect_heard_by(function_ids: tuple[str, ...], expected: dict[str, Any]) -> None:
        for function_id in function_ids:
            record = worker.event(function_id, lambda data: data == expected)
            assert record["event_type"].lower() == expected["event_type"].removeprefix("state:"), record

    worker.result("state::set", {"scope": other_scope, "key": "k", "value": 1})
    expect_heard_by(everyone[2:], state_event("state:created", other_scope, "k", None, 1))

    worker.result("state::set", {"scope": scope, "key": "other", "value": {"v": 0}})
    expect_heard_by(everyone[1:], state_event("state:created", scope, "other", None, {"v": 0}))

    worker.result("state::set", {"scope": scope, "key": "k", "value": {"v": 1}})
    expect_heard_by(everyone, state_event("state:created", scope, "k", None, {"v": 1}))

    worker.result("state::update", {"scope": scope, "key": "k", "ops": [{"type": "increment", "path": "v", "by": 1}]})
    expect_heard_by(everyone, state_event("state:updated", scope, "k", {"v": 1}, {"v": 2}))

    worker.result("state::set", {"scope": scope, "key": "k", "value": {"v": 3}})
    expect_heard_by(everyone, state_event("state:updated", scope, "k", {"v": 2}, {"v": 3}))

    worker.result("state::delete", {"scope": scope, "key": "k"})
    expect_heard_by(everyone, state_event("state:deleted", scope, "k", {"v": 3}, None))

    assert worker.unclaimed_events() == [], "a binding heard a change its config does not select"


# ---- publish and the subscribe trigger type ---------------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
def test_publish_reaches_every_subscriber_of_its_topic_and_no_other(start_worker: StartWorker, sdk: str) -> None:
    """Proves ``publish {topic, data}`` called through an official SDK calls every function bound to the topic
    with the official SDK's ``subscribe`` binding, with ``data`` itself as the payload (an object, a string or
    a list alike), and no function bound to another topic; an empty topic fails with the reference's
    ``topic_not_set``."""
    news, sports = f"interop.{sdk}.news", f"interop.{sdk}.sports"
    worker = start_worker(
        sdk,
        [
            ("interop.pubsub.news_a", "subscribe", {"topic": news}),
            ("interop.pubsub.news_b", "subscribe", {"topic": news}),
            ("interop.pubsub.sports", "subscribe", {"topic": sports}),
        ],
    )

    headline = {"headline": "Engine ships", "n": 1, "tags": ["release"]}
    assert worker.result("publish", {"topic": news, "data": headline}) is None
    for function_id in ("interop.pubsub.news_a", "interop.pubsub.news_b"):
        assert worker.event(function_id)["data"] == headline

    for data in ("full time", [3, 1]):
        worker.result("publish", {"topic": sports, "data": data})
        assert worker.event("interop.pubsub.sports")["data"] == data

    refused = worker.call("publish", {"topic": "", "data": {}})
    assert not refused["ok"] and refused["error"]["code"] == "topic_not_set", refused
    assert worker.unclaimed_events() == [], "a subscriber heard a topic it is not bound to"


# ---- the cron trigger type --------------------------------------------------------------------------------


@pytest.mark.parametrize("sdk", SDKS)
def test_a_cron_binding_with_seconds_fires_every_second(start_worker: StartWorker, sdk: str) -> None:
    """Proves a function bound with the official SDK to ``cron`` with the 6-field expression ``* * * * * *``
    (seconds first) is called on whole seconds with the reference's payload: ``trigger`` ``"cron"``, the
    binding's id as ``job_id``, and ``scheduled_time``/``actual_time`` that the SDK's language parses
    (``datetime.fromisoformat`` in Python, ``Date.parse`` in Node), the scheduled times a whole number of
    seconds apart and the actual time not before the scheduled one."""
    worker = start_worker(sdk, [("interop.cron.tick", "cron", {"expression": "* * * * * *"})])
    job_id = worker.binding_id("interop.cron.tick")

    ticks = [worker.event("interop.cron.tick", timeout_s=CRON_EVENT_TIMEOUT_S) for _ in range(2)]
    for tick in ticks:
        assert set(tick["data"]) == {"trigger", "job_id", "scheduled_time", "actual_time"}, tick
        assert tick["data"]["trigger"] == "cron"
        assert tick["data"]["job_id"] == job_id
        scheduled_ms, actual_ms = tick["times_ms"]["scheduled_time"], tick["times_ms"]["actual_time"]
        assert scheduled_ms % 1000 == 0, tick
        assert actual_ms >= scheduled_ms, tick
    gap_ms = ticks[1]["times_ms"]["scheduled_time"] - ticks[0]["times_ms"]["scheduled_time"]
    assert gap_ms >= 1000 and gap_ms % 1000 == 0, ticks


# ---- both SDKs on one engine ------------------------------------------------------------------------------


def test_state_changes_and_publications_reach_bindings_of_the_other_sdk(start_worker: StartWorker) -> None:
    """Proves the modules route between the official SDKs: a key the Node worker sets calls the Python
    worker's ``state`` binding and the Node worker's own, and a message the Python worker publishes calls the
    subscribers of both."""
    bindings = [
        ("state", {"scope": "interop-shared"}),
        ("subscribe", {"topic": "interop.shared"}),
    ]
    python = start_worker("python", [(f"interop.py.{t}", t, c) for t, c in bindings])
    node = start_worker("node", [(f"interop.node.{t}", t, c) for t, c in bindings])

    node.result("state::set", {"scope": "interop-shared", "key": "k", "value": {"from": "node"}})
    expected = state_event("state:created", "interop-shared", "k", None, {"from": "node"})
    assert python.event("interop.py.state")["data"] == expected
    assert node.event("interop.node.state")["data"] == expected

    python.result("publish", {"topic": "interop.shared", "data": {"from": "python"}})
    assert python.event("interop.py.subscribe")["data"] == {"from": "python"}
    assert node.event("interop.node.subscribe")["data"] == {"from": "python"}
    assert python.unclaimed_events() == [] and node.unclaimed_events() == []
