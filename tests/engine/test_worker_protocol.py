"""The worker socket on the wire: handshake, registration, routing, errors and bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets

from iii.engine import Engine
from tests.engine.wire import RawWorker, connect_raw, eventually

StartEngine = Callable[..., Awaitable[Engine]]


async def test_workerregistered_is_the_first_frame_with_id_reattach_token_features_and_limit(
    live_engine: Engine,
) -> None:
    worker = await RawWorker.connect(live_engine.url)
    assert set(worker.first_message) == {"type", "worker_id", "reattach_token", "features", "max_message_bytes"}
    assert worker.first_message["features"] == [
        "iii-py.channel-close-codes.v1",
        "iii-py.function-status.v1",
        "observe.v1",
        "local-dispatch.v1",
    ]
    assert worker.first_message["max_message_bytes"] == live_engine.config.max_message_bytes
    assert worker.worker_id in live_engine.workers
    other = await RawWorker.connect(live_engine.url)
    assert other.worker_id != worker.worker_id


async def test_a_call_reaches_the_host_and_the_result_comes_back_under_the_callers_id(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("math::double")

    traceparent = f"00-{'a' * 32}-{'b' * 16}-01"
    invocation_id = await caller.invoke("math::double", {"n": 21}, traceparent=traceparent, baggage="k=v")
    delivery = await host.serve_one(lambda d: {"n": d["data"]["n"] * 2})
    answer = await caller.recv_type("invocationresult")

    assert delivery["invocation_id"] != invocation_id  # the engine's own dispatch id
    assert delivery["data"] == {"n": 21, "_caller_worker_id": caller.worker_id}
    # The same trace; the parent is the engine's span of the call (tests/engine/test_engine_spans.py).
    assert delivery["traceparent"].startswith(f"00-{'a' * 32}-") and delivery["traceparent"] != traceparent
    assert delivery["baggage"] == "k=v"
    assert "action" not in delivery and "namespace" not in delivery
    assert answer == {
        "type": "invocationresult",
        "invocation_id": invocation_id,
        "function_id": "math::double",
        "result": {"n": 42},
    }


async def test_a_worker_can_call_its_own_functions_through_the_engine(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.register("self::echo")
    invocation_id = await worker.invoke("self::echo", [1, 2, 3])
    delivery = await worker.serve_one(lambda d: d["data"])
    assert delivery["data"] == [1, 2, 3]  # non-object payloads are not touched
    answer = await worker.recv_type("invocationresult")
    assert (answer["invocation_id"], answer["result"]) == (invocation_id, [1, 2, 3])


async def test_errors_from_the_host_are_passed_to_the_caller(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("fails")
    invocation_id = await caller.invoke("fails", {})
    delivery = await host.recv_type("invokefunction")
    error = {"code": "invocation_failed", "message": "boom", "stacktrace": "Traceback ..."}
    await host.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "error": error})
    answer = await caller.recv_type("invocationresult")
    assert answer["invocation_id"] == invocation_id
    assert answer["error"] == error
    assert "result" not in answer


async def test_void_calls_are_delivered_and_nothing_comes_back(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("sink")
    await caller.send({"type": "invokefunction", "function_id": "sink", "data": {"v": 1}, "action": {"type": "void"}})
    delivery = await host.serve_one(lambda d: {"ignored": True})
    assert delivery["invocation_id"]
    assert delivery["data"]["v"] == 1
    # A void call to a missing function is silent too; the next answer the caller sees is its pong.
    await caller.send({"type": "invokefunction", "function_id": "missing", "action": {"type": "void"}})
    await caller.send({"type": "ping"})
    assert (await caller.recv())["type"] == "pong"
    assert len(live_engine.router) == 0


async def test_unknown_functions_fail_at_once(live_engine: Engine) -> None:
    caller = await RawWorker.connect(live_engine.url)
    answer = await caller.call("no::such")
    assert answer["error"]["code"] == "function_not_found"
    assert "no::such" in answer["error"]["message"]


async def test_results_are_accepted_only_from_the_worker_the_call_went_to(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    intruder = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("guarded")
    invocation_id = await caller.invoke("guarded", {})
    delivery = await host.recv_type("invokefunction")
    forged = {"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": "forged"}
    await intruder.send(forged)
    await intruder.ping()  # the forged result has been processed
    await host.send({**forged, "result": "genuine"})
    answer = await caller.recv_type("invocationresult")
    assert (answer["invocation_id"], answer["result"]) == (invocation_id, "genuine")


async def test_callers_waiting_on_a_worker_that_disconnects_get_invocation_stopped(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("slow")
    first = await caller.invoke("slow", {})
    second = await caller.invoke("slow", {})
    await host.recv_type("invokefunction")
    await host.recv_type("invokefunction")
    host.ws.transport.abort()  # drop the connection without a close frame
    answers = {}
    for _ in range(2):
        message = await caller.recv_type("invocationresult", timeout_s=1.0)
        answers[message["invocation_id"]] = message["error"]["code"]
    assert answers == {first: "invocation_stopped", second: "invocation_stopped"}
    # The function went with its worker.
    assert (await caller.call("slow"))["error"]["code"] == "function_not_found"


async def test_the_engine_times_calls_out(start_engine: StartEngine) -> None:
    engine = await start_engine(invocation_timeout_s=0.3)
    host = await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await host.register("never")
    answer = await caller.call("never", {})
    assert answer["error"]["code"] == "TIMEOUT"
    # A caller may ask for less than the engine's limit (an optional field of ours).
    answer = await caller.call("never", {}, timeout_ms=50)
    assert answer["error"]["code"] == "TIMEOUT"
    assert len(engine.router) == 0
    # A late answer to a timed-out call is dropped quietly.
    delivery = await host.recv_type("invokefunction")
    await host.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": 1})
    await host.ping()


async def test_a_second_worker_cannot_take_a_live_workers_function(live_engine: Engine) -> None:
    first = await RawWorker.connect(live_engine.url)
    second = await RawWorker.connect(live_engine.url)
    await first.register("owned")
    await second.send({"type": "registerfunction", "id": "owned"})
    rejection = await second.recv_type("registrationrejected")
    assert rejection == {
        "type": "registrationrejected",
        "code": "FUNCTION_NAMESPACE_CONFLICT",
        "namespace": "default",
        "function_id": "owned",
        "owner_worker_id": first.worker_id,
    }
    await second.send({"type": "registerfunction", "id": "engine::channels::create"})
    assert (await second.recv_type("registrationrejected"))["owner_worker_id"] == ""
    await first.close()
    # The refused worker stood by: once the owner is gone it serves the id at once, and is told so.
    assert await second.recv_type("functionactivated") == {"type": "functionactivated", "function_id": "owned"}
    entry = live_engine.functions.get("owned")
    assert entry is not None and entry.owner is not None and entry.owner.worker_id == second.worker_id


async def test_a_standby_serves_the_function_as_soon_as_its_owner_leaves(live_engine: Engine) -> None:
    """A rolling restart: the new instance registers while the old one still serves; calls made after the old
    one left reach the new one (before, the refused registration was forgotten: function_not_found)."""
    old = await RawWorker.connect(live_engine.url)
    await old.send({"type": "registerfunction", "id": "svc.who"})
    assert (await old.recv_type("functionactivated"))["function_id"] == "svc.who"
    new = await RawWorker.connect(live_engine.url)
    later = await RawWorker.connect(live_engine.url)
    for standby in (new, later):
        await standby.send({"type": "registerfunction", "id": "svc.who"})
        assert (await standby.recv_type("registrationrejected"))["owner_worker_id"] == old.worker_id
    caller = await RawWorker.connect(live_engine.url)
    await old.ws.close()
    assert (await new.recv_type("functionactivated"))["function_id"] == "svc.who"
    call_id = await caller.invoke("svc.who", {"n": 1})
    delivery = await new.recv_type("invokefunction")
    await new.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": "new"})
    answer = await caller.recv_type("invocationresult")
    assert answer["invocation_id"] == call_id and answer["result"] == "new"
    # Withdrawing hands over to the next standby too.
    await new.send({"type": "unregisterfunction", "id": "svc.who"})
    assert (await later.recv_type("functionactivated"))["function_id"] == "svc.who"


async def test_unregister_removes_only_the_owners_function(live_engine: Engine) -> None:
    owner = await RawWorker.connect(live_engine.url)
    other = await RawWorker.connect(live_engine.url)
    await owner.register("f")
    await other.send({"type": "unregisterfunction", "id": "f"})
    await other.ping()
    assert live_engine.functions.get("f") is not None
    await owner.send({"type": "unregisterfunction", "id": "f"})
    await owner.ping()
    assert live_engine.functions.get("f") is None


async def test_reattach_hands_the_reconnecting_worker_its_functions_and_calls(live_engine: Engine) -> None:
    old = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await old.register("resilient")
    invocation_id = await caller.invoke("resilient", {"x": 1})
    delivery = await old.recv_type("invokefunction")

    new = await RawWorker.connect(live_engine.url)
    await new.send({"type": "reattach", "previous_worker_id": old.worker_id, "reattach_token": "wrong"})
    await new.ping()
    assert old.worker_id in live_engine.workers  # a wrong token changes nothing

    await new.send({"type": "reattach", "previous_worker_id": old.worker_id, "reattach_token": old.reattach_token})
    await new.ping()
    assert old.worker_id not in live_engine.workers
    with pytest.raises(websockets.ConnectionClosed):
        await old.recv(timeout_s=2)
    # The call dispatched to the old connection is answered on the new one.
    await new.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": "late"})
    answer = await caller.recv_type("invocationresult")
    assert (answer["invocation_id"], answer["result"]) == (invocation_id, "late")
    # And new calls go to the new connection.
    await caller.invoke("resilient", {})
    assert (await new.recv_type("invokefunction"))["function_id"] == "resilient"


async def test_ping_is_answered_with_pong(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send({"type": "ping"})
    assert await worker.recv() == {"type": "pong"}


async def test_websocket_pings_are_answered(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    pong = await worker.ws.ping(b"are you there")
    await asyncio.wait_for(pong, 5)


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("{oops", "not valid JSON"),
        ('"just a string"', "JSON object"),
        ('{"type": 12}', "JSON object"),
        ('{"type": "registerfunction", "id": ["a"]}', "Expected `str`"),
        ('{"type": "invocationresult"}', "invocation_id"),
        ('{"type": "reattach", "previous_worker_id": 5}', "Expected `str`"),
    ],
)
async def test_malformed_messages_get_a_clear_error_and_the_connection_stays(
    live_engine: Engine, frame: str, fragment: str
) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send(frame)
    notice = await worker.recv()
    assert notice["type"] == "error"
    assert notice["error"]["code"] == "invalid_message"
    assert fragment in notice["error"]["message"]
    await worker.ping()


async def test_a_broken_invoke_is_answered_on_its_invocation_id(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send({"type": "invokefunction", "invocation_id": "abc", "function_id": 123})
    answer = await worker.recv()
    assert answer["type"] == "invocationresult"
    assert answer["invocation_id"] == "abc"
    assert answer["error"]["code"] == "invalid_message"


async def test_invalid_utf8_is_refused_without_dropping_the_connection(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    await host.register("f")
    caller = await connect_raw(live_engine.url)
    await caller.recv()
    # A text frame must be UTF-8; send the bytes through the protocol layer to get an invalid one out.
    caller.protocol.send_text(b'{"type":"invokefunction","function_id":"f","data":"\xff"}')
    await caller.send('{"type":"ping"}')
    notice = json.loads(await asyncio.wait_for(caller.recv(), 5))
    assert notice["type"] == "error" and "UTF-8" in notice["error"]["message"]
    assert json.loads(await asyncio.wait_for(caller.recv(), 5)) == {"type": "pong"}


async def test_unknown_types_and_fields_are_ignored_and_missing_data_is_null(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("f")
    await caller.send({"type": "a-future-type", "whatever": [1, 2]})
    await caller.send({"type": "invokefunction", "invocation_id": "i-1", "function_id": "f", "future_field": {"x": 1}})
    delivery = await host.serve_one(lambda d: None)
    assert delivery["data"] is None
    answer = await caller.recv()  # nothing came back for the unknown type
    assert answer["invocation_id"] == "i-1"
    assert answer.get("result") is None and not answer.get("error")


async def test_a_null_answer_from_inside_the_engine_leaves_result_out(live_engine: Engine) -> None:
    """A function served inside the engine that answers null (``state::get`` of a missing key, ``publish``)
    sends no ``result``, as the reference engine does: the official Node SDK 0.22 then resolves ``undefined``,
    which its own state tests expect for a missing key (an explicit ``"result": null`` resolves ``null``).
    A worker's answer is relayed as it came, an explicit null included."""
    caller = await RawWorker.connect(live_engine.url)
    missing = await caller.call("state::get", {"scope": "s", "key": "missing"})
    assert missing == {
        "type": "invocationresult",
        "invocation_id": missing["invocation_id"],
        "function_id": "state::get",
    }
    published = await caller.call("publish", {"topic": "t", "data": 1})
    assert published == {
        "type": "invocationresult",
        "invocation_id": published["invocation_id"],
        "function_id": "publish",
    }

    host = await RawWorker.connect(live_engine.url)
    await host.register("explicit::null")
    invocation_id = await caller.invoke("explicit::null")
    await host.serve_one(lambda d: None)  # sends "result": null
    answer = await caller.recv_type("invocationresult")
    assert answer["invocation_id"] == invocation_id
    assert "result" in answer and answer["result"] is None


async def test_binary_frames_on_the_control_socket_are_refused_clearly(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send(b'{"type":"ping"}')
    notice = await worker.recv()
    assert notice["type"] == "error" and "binary frames" in notice["error"]["message"]
    await worker.send(b"OTLP{}")  # telemetry sent to the wrong socket is dropped silently
    await worker.ping()


async def test_an_oversized_call_is_refused_and_never_reaches_its_target(start_engine: StartEngine) -> None:
    """A call over ``--max-message-bytes`` is answered ``message_too_big``; the target never runs it, and
    nobody is disconnected (before, the target ran it while its caller was cut off, so a retry ran it twice)."""
    engine = await start_engine(max_message_bytes=1024 * 1024)
    target = await RawWorker.connect(engine.url)
    await target.register("svc.big")
    caller = await RawWorker.connect(engine.url)
    answer = await caller.call("svc.big", {"blob": "a" * (1024 * 1024 + 1)})
    assert answer["error"]["code"] == "message_too_big"
    assert "svc.big" in answer["error"]["message"] and "1048576" in answer["error"]["message"]
    # Both connections go on, and the next thing the target is sent is the small call, not the big one.
    small = await caller.invoke("svc.big", {"blob": "small"})
    delivery = await target.recv_type("invokefunction")
    assert delivery["data"]["blob"] == "small"
    await target.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": 1})
    assert (await caller.recv_type("invocationresult"))["invocation_id"] == small
    fragmented = json.dumps(
        {"type": "invokefunction", "invocation_id": "f", "function_id": "svc.big", "data": "b" * 1_200_000}
    )
    await caller.ws.send(iter([fragmented[:600_000], fragmented[600_000:]]))
    assert (await caller.recv_type("invocationresult"))["error"]["code"] == "message_too_big"
    await target.ping()


async def test_an_oversized_result_fails_the_call_and_keeps_the_target(start_engine: StartEngine) -> None:
    """A result over the limit reaches its caller as ``message_too_big``; the target is told and stays
    connected with its other calls (before, the result was delivered and the target dropped)."""
    engine = await start_engine(max_message_bytes=1024 * 1024)
    target = await RawWorker.connect(engine.url)
    await target.register("svc.huge")
    caller = await RawWorker.connect(engine.url)
    first = await caller.invoke("svc.huge")
    second = await caller.invoke("svc.huge")
    deliveries = [await target.recv_type("invokefunction") for _ in range(2)]
    huge = {"type": "invocationresult", "invocation_id": deliveries[0]["invocation_id"], "result": "c" * 1_100_000}
    await target.send(huge)
    failed = await caller.recv_type("invocationresult")
    assert failed["invocation_id"] == first and failed["error"]["code"] == "message_too_big"
    notice = await target.recv_type("error")
    assert notice["error"]["code"] == "message_too_big" and "svc.huge" in notice["error"]["message"]
    await target.send({"type": "invocationresult", "invocation_id": deliveries[1]["invocation_id"], "result": "ok"})
    answered = await caller.recv_type("invocationresult")
    assert answered["invocation_id"] == second and answered["result"] == "ok"
    assert len(engine.router) == 0


async def test_a_message_too_big_to_read_closes_the_connection_with_1009(start_engine: StartEngine) -> None:
    """Past twice the limit (and at least 16 MiB more) a message is not read at all: close 1009."""
    engine = await start_engine(max_message_bytes=1024 * 1024)
    worker = await RawWorker.connect(engine.url)
    other = await RawWorker.connect(engine.url)
    await worker.ws.send(iter(["{" + " " * (9 * 1024 * 1024), " " * (9 * 1024 * 1024) + "}"]))
    with pytest.raises(websockets.ConnectionClosed) as caught:
        await worker.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009
    await other.ping()  # other workers are unaffected


async def test_large_and_fragmented_messages_are_relayed_as_utf8(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("echo")
    text = "😀" * (20 * 1024 * 1024 // 4)  # 20 MiB of UTF-8
    message = json.dumps(
        {"type": "invokefunction", "invocation_id": "big", "function_id": "echo", "data": {"t": text}},
        ensure_ascii=False,
    )
    fragments = [message[i : i + 1024 * 1024] for i in range(0, len(message), 1024 * 1024)]
    await caller.ws.send(iter(fragments))  # a fragmented text message, as iii-sdk 0.25 sends one
    raw = await asyncio.wait_for(host.ws.recv(decode=False), 30)
    assert len(raw) < 21 * 1024 * 1024  # UTF-8, not \\u escapes (which would be 60 MiB)
    delivery = json.loads(raw)
    assert delivery["data"]["t"] == text
    await host.send(
        json.dumps(
            {"type": "invocationresult", "invocation_id": delivery["invocation_id"], "result": delivery["data"]["t"]},
            ensure_ascii=False,
        )
    )
    answer = await caller.recv_type("invocationresult", timeout_s=30)
    assert answer["result"] == text


async def test_64_mib_messages_are_accepted(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("size")
    blob = "x" * (64 * 1024 * 1024 - 200)
    await caller.send({"type": "invokefunction", "invocation_id": "i", "function_id": "size", "data": blob})
    delivery = await host.recv_type("invokefunction", timeout_s=30)
    assert len(delivery["data"]) == len(blob)


# --- builtins ---------------------------------------------------------------------------------------------


async def test_functions_list_shows_registered_functions_and_hides_builtins(core_engine: Engine) -> None:
    worker = await RawWorker.connect(core_engine.url)
    await worker.send({"type": "registerfunction", "id": "shop::order", "description": "Order", "metadata": {"v": 2}})
    await worker.ping()
    listing = await worker.result_of("engine::functions::list", {})
    assert listing["functions"] == [
        {
            "function_id": "shop::order",
            "namespace": "default",
            "worker_name": "",
            "worker_id": worker.worker_id,
            "description": "Order",
            "metadata": {"v": 2},
        }
    ]
    everything = await worker.result_of("engine::functions::list", {"include_internal": True})
    ids = {item["function_id"] for item in everything["functions"]}
    assert {"engine::channels::create", "engine::channels::list", "engine::workers::list"} <= ids


async def test_workers_register_and_list(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    metadata = {"name": "billing", "runtime": "python", "version": "1.2.3", "pid": 42, "os": "linux"}
    await worker.send(
        {
            "type": "invokefunction",
            "function_id": "engine::workers::register",
            "data": metadata,
            "action": {"type": "void"},
        }
    )
    await worker.register("billing::charge")
    listing = await worker.result_of("engine::workers::list", {})
    (me,) = [w for w in listing["workers"] if w["id"] == worker.worker_id]
    assert (me["name"], me["runtime"], me["version"], me["pid"], me["function_count"]) == (
        "billing",
        "python",
        "1.2.3",
        42,
        1,
    )
    assert me["status"] == "connected" and me["ip_address"] == "127.0.0.1"


@pytest.mark.parametrize("bad", [{"buffer_size": "big"}, {"buffer_size": 1.5}, {"buffer_size": True}, [1]])
async def test_channels_create_rejects_bad_input(live_engine: Engine, bad: Any) -> None:
    worker = await RawWorker.connect(live_engine.url)
    answer = await worker.call("engine::channels::create", bad)
    assert answer["error"]["code"] == "deserialization_error"


async def test_channels_create_gives_separate_keys_per_direction(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    refs = await worker.result_of("engine::channels::create", {"buffer_size": None})
    assert refs["writer"]["direction"] == "write" and refs["reader"]["direction"] == "read"
    assert refs["writer"]["channel_id"] == refs["reader"]["channel_id"]
    assert refs["writer"]["access_key"] != refs["reader"]["access_key"]
    listing = await worker.result_of("engine::channels::list", {})
    (channel,) = listing["channels"]
    assert channel["channel_id"] == refs["writer"]["channel_id"]
    assert (channel["writer"], channel["reader"], channel["buffer_size"]) == ("waiting", "waiting", 64)
    assert refs["writer"]["access_key"] not in json.dumps(listing)
    assert refs["reader"]["access_key"] not in json.dumps(listing)


async def test_a_worker_that_does_not_read_holds_back_its_callers_without_losing_calls(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("slow::reader")
    host.ws.transport.pause_reading()  # the host process stops reading its socket
    payload = "p" * (1024 * 1024)
    calls = 100

    async def flood() -> None:
        for index in range(calls):
            await caller.send(
                {"type": "invokefunction", "invocation_id": f"c{index}", "function_id": "slow::reader", "data": payload}
            )

    sending = asyncio.ensure_future(flood())
    engine_host = live_engine.workers[host.worker_id]
    engine_caller = live_engine.workers[caller.worker_id]
    await eventually(lambda: bool(engine_caller._held_by), what="the caller's reading is held back")
    buffered = engine_host.transport.underlying_transport.get_write_buffer_size()  # type: ignore[union-attr]
    assert buffered < 16 * 1024 * 1024  # bounded: far below the 100 MiB the caller is trying to send
    assert not sending.done()

    host.ws.transport.resume_reading()
    for _ in range(calls):
        await host.serve_one(lambda d: len(d["data"]))
    await sending
    answers = [await caller.recv_type("invocationresult") for _ in range(calls)]
    assert sorted(a["invocation_id"] for a in answers) == sorted(f"c{i}" for i in range(calls))
    assert all(a["result"] == len(payload) for a in answers)


async def test_a_worker_that_goes_silent_is_dropped_and_its_callers_told(start_engine: StartEngine) -> None:
    engine = await start_engine(worker_ping_interval_s=0.2, worker_ping_timeout_s=0.3)
    host = await RawWorker.connect(engine.url, ping_interval=None)
    caller = await RawWorker.connect(engine.url)
    await host.register("silent::fn")
    invocation_id = await caller.invoke("silent::fn", {})
    await host.recv_type("invokefunction")
    host.ws.transport.pause_reading()  # the host's process hangs: it neither reads nor answers pings
    answer = await caller.recv_type("invocationresult", timeout_s=5)
    assert (answer["invocation_id"], answer["error"]["code"]) == (invocation_id, "invocation_stopped")
    assert host.worker_id not in engine.workers
    # The caller answered the engine's pings (websockets does so while reading) and is still connected.
    await caller.ping()
    assert caller.worker_id in engine.workers
