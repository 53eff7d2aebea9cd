"""Who may subscribe: the auth function before the upgrade (fail closed), and the ``stream:join`` /
``stream:leave`` trigger types, in a real (in-process) engine served by a bare worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import websockets

from iii.engine import Engine
from tests.engine.wire import RawWorker
from tests.modules.streams.subscriber_client import Subscriber, answer, bind, join, leave, stream_module

StartEngine = Callable[..., Awaitable[Engine]]
AUTH = {"stream": {"auth_function": "auth::stream", "auth_timeout_s": 5.0}}


@pytest.fixture
async def engine(start_engine: StartEngine) -> Engine:
    """An engine whose stream module admits subscribers with ``auth::stream``."""
    return await start_engine(http_port=-1, modules="stream", module_settings=AUTH)


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[RawWorker]:
    """A bare worker of ``engine`` (it serves the auth function and the bindings, call by call)."""
    connected = await RawWorker.connect(engine.url)
    yield connected
    await connected.close()


def url_of(engine: Engine) -> str:
    return stream_module(engine).url


async def test_an_admitted_client_s_context_reaches_join_and_leave_bindings(engine: Engine, worker: RawWorker) -> None:
    await worker.register("auth::stream")
    await bind(worker, "stream:join", "on::join")
    await bind(worker, "stream:leave", "on::leave")
    connecting = asyncio.create_task(
        Subscriber.connect(url_of(engine) + "/?token=t1", additional_headers={"Authorization": "Bearer abc"})
    )
    request = await answer(worker, "auth::stream", {"context": {"user": "ada"}})
    assert request["path"] == "/"
    assert request["query_params"] == {"token": ["t1"]}
    assert request["headers"]["Authorization"] == "Bearer abc"
    assert request["addr"].startswith("127.0.0.1:")
    subscriber = await connecting
    await subscriber.send(join("s1", "todos", "inbox", "a"))
    joined = await answer(worker, "on::join", {})
    assert joined == {
        "subscription_id": "s1",
        "stream_name": "todos",
        "group_id": "inbox",
        "id": "a",
        "context": {"user": "ada"},
    }
    assert await subscriber.event() == {"id": "a", "type": "sync", "data": None}
    await subscriber.send(leave("s1", "todos", "inbox", "a"))
    assert (await answer(worker, "on::leave"))["subscription_id"] == "s1"
    await subscriber.send(join("s2", "todos", "inbox"))
    await answer(worker, "on::join", None)  # any answer but {"unauthorized": true} lets it in
    assert (await subscriber.event())["type"] == "sync"
    await subscriber.close()  # leave for every subscription still open
    assert await answer(worker, "on::leave") == {**joined, "subscription_id": "s2", "id": None}


async def test_an_unauthorized_join_gets_that_message_and_nothing_of_the_group(
    engine: Engine, worker: RawWorker
) -> None:
    await bind(worker, "stream:join", "on::join")
    await worker.register("auth::stream")
    connecting = asyncio.create_task(Subscriber.connect(url_of(engine)))
    await answer(worker, "auth::stream", {"context": None})
    subscriber = await connecting
    await subscriber.send(join("secret", "todos", "secret"))
    await answer(worker, "on::join", {"unauthorized": True})
    assert await subscriber.event() == {"id": None, "type": "unauthorized"}
    await subscriber.send(join("open", "todos", "open"))
    await answer(worker, "on::join", {"unauthorized": False})
    assert await subscriber.event() == {"id": None, "type": "sync", "data": []}
    caller = await RawWorker.connect(engine.url)
    for group in ("secret", "open"):
        await caller.result_of(
            "stream::set", {"stream_name": "todos", "group_id": group, "item_id": "x", "data": group}
        )
    assert await subscriber.event() == {"id": "x", "type": "create", "data": "open"}  # the secret one never came
    await caller.close()
    await subscriber.close()


@pytest.mark.parametrize(
    "reply",
    [{"result": {"user": "no context field"}}, {"result": None}, {"error": {"code": "denied", "message": "bad token"}}],
)
async def test_a_refused_client_gets_401_and_no_socket(
    engine: Engine, worker: RawWorker, reply: dict[str, Any]
) -> None:
    await worker.register("auth::stream")
    connecting = asyncio.create_task(Subscriber.connect(url_of(engine)))
    await answer(worker, "auth::stream", **reply)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connecting
    assert refused.value.response.status_code == 401
    if "error" in reply:
        assert b"bad token" in refused.value.response.body
    assert stream_module(engine).snapshot()["subscribers"] == 0


async def test_without_its_auth_function_the_port_answers_503(engine: Engine) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Subscriber.connect(url_of(engine))
    assert refused.value.response.status_code == 503
    assert b"try again later" in refused.value.response.body


async def test_an_auth_function_slower_than_auth_timeout_s_is_503(start_engine: StartEngine) -> None:
    settings = {"stream": {**AUTH["stream"], "auth_timeout_s": 0.3}}
    engine = await start_engine(http_port=-1, modules="stream", module_settings=settings)
    worker = await RawWorker.connect(engine.url)
    await worker.register("auth::stream")  # registered, and never answers
    with pytest.raises(websockets.InvalidStatus) as refused:
        await Subscriber.connect(url_of(engine))
    assert refused.value.response.status_code == 503
    assert (await worker.recv_type("invokefunction"))["function_id"] == "auth::stream"
    await worker.close()
