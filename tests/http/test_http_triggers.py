"""HTTP requests served by functions through the engine's http trigger, checked with real HTTP clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from iii import III, ChannelBrokenError, HttpRequest, InitOptions, http_response, register_worker
from iii.testing import EngineProcess
from tests.http.conftest import bind, routes_ready

TIMEOUT = aiohttp.ClientTimeout(total=60)
POST: dict[str, Any] = {"id": 7, "title": "Hello", "body": "Post text"}
TABLE: dict[str, Any] = {"headers": ["date", "amount"], "rows": [["2026-01-01", 3]]}


class Served:
    """A worker serving routes on a shared engine, with a queue where handlers report what they saw."""

    def __init__(self, engine: EngineProcess, client: III) -> None:
        self.engine = engine
        self.client = client
        self.url = engine.http_url
        self.seen: queue.Queue[Any] = queue.Queue()
        self.release = threading.Event()

    async def next_seen(self) -> Any:
        return await asyncio.to_thread(self.seen.get, timeout=30)


@pytest.fixture(scope="module")
def served(shared_engine: EngineProcess) -> Iterator[Served]:
    with register_worker(shared_engine.url, InitOptions(worker_name="http-tests")) as client:
        s = Served(shared_engine, client)

        def echo(data: dict[str, Any]) -> dict[str, Any]:
            request = HttpRequest.of(data)
            return http_response(
                {
                    "body": request.body,
                    "path_params": request.path_params,
                    "query": request.query_params,
                    "header": request.header("X-Test"),
                    "path": request.path,
                    "method": request.method,
                },
                status_code=201,
                headers={"X-Served-By": "echo"},
            )

        def me(data: dict[str, Any]) -> Any:
            return {"who": "me"}

        async def sha256(data: dict[str, Any]) -> dict[str, Any]:
            request = HttpRequest.of(data)
            digest = hashlib.sha256()
            size = 0
            try:
                async for chunk in request.request_body:
                    digest.update(chunk)
                    size += len(chunk)
            except ChannelBrokenError as exc:
                s.seen.put(exc)
                raise
            return {"sha256": digest.hexdigest(), "bytes": size}

        def text(data: dict[str, Any]) -> None:
            response = HttpRequest.of(data).response
            response.status(202)
            response.headers({"Content-Type": "text/plain; charset=utf-8", "X-Lines": "3"})
            for line in ("one\n", "two\n", "three\n"):
                response.write(line)
            response.close()

        def empty(data: dict[str, Any]) -> None:
            response = HttpRequest.of(data).response
            response.status(204)
            response.close()

        def events(data: dict[str, Any]) -> None:
            request = HttpRequest.of(data)
            count = int(str(request.query_params.get("n", "3")))
            response = request.response
            response.headers({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            for i in range(count):
                response.send_event({"step": i}, event="progress", event_id=str(i))
                s.seen.get(timeout=30)  # the test reads each event before the next one is sent
            response.send_event("done", event="end")
            response.close()

        def endless(data: dict[str, Any]) -> None:
            response = HttpRequest.of(data).response
            block = b"x" * 65536
            try:
                while True:
                    response.write(block)
            except ChannelBrokenError as exc:
                s.seen.put(exc)

        def fail(data: dict[str, Any]) -> None:
            raise ValueError("the widget is broken")

        def fail_midway(data: dict[str, Any]) -> None:
            response = HttpRequest.of(data).response
            response.write(b"partial")
            s.seen.get(timeout=30)  # the test has the first bytes
            raise RuntimeError("gave up half way")

        def bad_status(data: dict[str, Any]) -> dict[str, Any]:
            return {"status_code": 1000}

        bind(client, "http.echo", echo, "POST", "/items/:id")
        bind(client, "http.me", me, "GET", "/users/me")
        bind(client, "http.post", lambda data: POST, "GET", "/posts/7")
        bind(client, "http.table", lambda data: TABLE, "GET", "/table")
        bind(client, "http.user", lambda data: {"user": data["path_params"]["id"]}, "GET", "/users/:id")
        bind(client, "http.sha256", sha256, "PUT", "/upload")
        bind(client, "http.text", text, "GET", "/text")
        bind(client, "http.empty", empty, "GET", "/empty")
        bind(client, "http.events", events, "GET", "/events")
        bind(client, "http.endless", endless, "GET", "/endless")
        bind(client, "http.fail", fail, "GET", "/fail")
        bind(client, "http.fail_midway", fail_midway, "GET", "/fail-midway")
        bind(client, "http.bad_status", bad_status, "GET", "/bad-status")
        client.register_trigger(
            {"type": "http", "function_id": "http.nobody", "config": {"api_path": "/nobody", "http_method": "GET"}}
        )
        routes_ready(client)
        yield s


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True, text=True, timeout=60)


async def test_json_in_json_out(served: Served) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(
            f"{served.url}/items/a%20b?tag=x&tag=y&one=1", json={"name": "ann"}, headers={"X-Test": "t"}
        ) as response,
    ):
        assert response.status == 201
        assert response.headers["X-Served-By"] == "echo"
        assert response.headers["Content-Type"] == "application/json"
        assert await response.json() == {
            "body": {"name": "ann"},
            "path_params": {"id": "a b"},
            "query": {"tag": ["x", "y"], "one": "1"},
            "header": "t",
            "path": "/items/:id",
            "method": "POST",
        }


def test_json_in_json_out_with_curl(served: Served) -> None:
    done = curl("-i", "-X", "POST", "-H", "Content-Type: application/json", "-d", '{"n": 7}', f"{served.url}/items/9")
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition("\n\n")  # text mode turns CRLF into LF
    assert head.startswith("HTTP/1.1 201")
    assert json.loads(body)["body"] == {"n": 7} and json.loads(body)["path_params"] == {"id": "9"}


async def test_data_with_body_or_headers_fields_is_data_not_a_response(served: Served) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for path, data in (("/posts/7", POST), ("/table", TABLE)):
            async with http.get(f"{served.url}{path}") as response:
                assert (response.status, response.content_type, await response.json()) == (
                    200,
                    "application/json",
                    data,
                )


async def test_a_literal_route_wins_over_a_parameter(served: Served) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.get(f"{served.url}/users/me") as me,
        http.get(f"{served.url}/users/42") as user,
    ):
        assert (await me.json(), await user.json()) == ({"who": "me"}, {"user": "42"})


async def test_a_streamed_body_is_hashed_by_the_function(served: Served) -> None:
    blocks = [bytes([i]) * 100_003 for i in range(40)]

    async def body() -> Any:
        for block in blocks:
            yield block

    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.put(f"{served.url}/upload", data=body()) as response,  # chunked, no length
    ):
        assert response.status == 200
        assert await response.json() == {
            "sha256": hashlib.sha256(b"".join(blocks)).hexdigest(),
            "bytes": sum(map(len, blocks)),
        }


def test_an_upload_with_curl(served: Served, tmp_path: Any) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(bytes(range(256)) * 4099)
    done = curl("-T", str(upload), f"{served.url}/upload")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "sha256": hashlib.sha256(upload.read_bytes()).hexdigest(),
        "bytes": upload.stat().st_size,
    }


async def test_a_streamed_response_has_its_status_headers_and_body(served: Served) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.get(f"{served.url}/text") as response:
            assert response.status == 202
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert response.headers["X-Lines"] == "3"
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert await response.text() == "one\ntwo\nthree\n"
        async with http.get(f"{served.url}/empty") as response:
            assert (response.status, await response.read()) == (204, b"")
    done = curl("-i", f"{served.url}/text")
    assert done.stdout.startswith("HTTP/1.1 202") and done.stdout.endswith("one\ntwo\nthree\n")


async def test_head_gets_the_get_route_s_status_and_headers_without_a_body(served: Served) -> None:
    for path, status in (("/text", 202), ("/users/me", 200)):
        host, port = served.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 30)  # everything until the server closes
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d" % status) and body == b"", answer


async def test_server_sent_events_arrive_one_by_one(served: Served) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(f"{served.url}/events?n=3") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        for i in range(3):
            event = await _read_event(response.content)
            assert event == {"id": str(i), "event": "progress", "data": json.dumps({"step": i})}
            served.seen.put("next")  # only now does the function send the next event
        assert await _read_event(response.content) == {"event": "end", "data": "done"}
        assert await response.content.read() == b""


def test_server_sent_events_with_curl(served: Served) -> None:
    # curl -N prints events as they come; the function waits for the test between events, so feed it.
    for _ in range(2):
        served.seen.put("next")
    done = curl("-N", f"{served.url}/events?n=2")
    assert done.stdout == (
        'id: 0\nevent: progress\ndata: {"step": 0}\n\n'
        'id: 1\nevent: progress\ndata: {"step": 1}\n\n'
        "event: end\ndata: done\n\n"
    )


async def _read_event(content: aiohttp.StreamReader) -> dict[str, str]:
    event: dict[str, str] = {}
    while (line := (await content.readline()).decode()) not in ("\n", ""):
        name, _, value = line.rstrip("\n").partition(": ")
        event[name] = value
    return event


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "NOT_FOUND"),
        ("DELETE", "/users/7", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/fail", 500, "invocation_failed"),
        ("GET", "/bad-status", 500, "INVALID_RESPONSE"),
        ("GET", "/nobody", 503, "function_not_found"),
    ],
)
async def test_errors_have_a_status_and_a_json_error(
    served: Served, method: str, path: str, status: int, code: str
) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.request(method, f"{served.url}{path}") as response,
    ):
        assert response.status == status
        error = (await response.json())["error"]
        assert error["code"] == code
        assert error["message"]
        assert ("error_id" in error) == (status >= 500)
        assert "Traceback" not in json.dumps(error)  # the function's stack stays in the logs


async def test_a_failing_function_s_message_and_error_id_reach_the_client_and_the_log(served: Served) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(f"{served.url}/fail") as response:
        error = (await response.json())["error"]
    assert error["message"] == "the widget is broken"
    # The engine's log is read from its stderr by a thread: wait for the line, it may follow the response.
    assert error["error_id"] in await asyncio.to_thread(served.engine.wait_for_log, error["error_id"], 10)


async def test_malformed_json_is_a_400(served: Served) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(f"{served.url}/items/1", data=b'{"name": ', headers={"Content-Type": "application/json"}) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "INVALID_JSON"


async def test_a_client_that_leaves_mid_upload_breaks_the_function_s_reader(served: Served) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"z" * 300_000)
    await writer.drain()
    writer.close()
    broken = await served.next_seen()
    assert isinstance(broken, ChannelBrokenError)
    assert broken.code == 4001 and "disconnected" in broken.reason


async def test_a_client_that_leaves_mid_download_breaks_the_function_s_writer(served: Served) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(f"{served.url}/endless") as response:
        assert len(await response.content.readexactly(1_000_000)) == 1_000_000
        response.close()  # drops the connection
    broken = await served.next_seen()
    assert isinstance(broken, ChannelBrokenError) and broken.code == 4002


async def test_a_function_that_fails_after_streaming_began_cuts_the_response(served: Served) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(f"{served.url}/fail-midway") as response:
        assert response.status == 200
        assert await response.content.readexactly(7) == b"partial"
        served.seen.put("go on")
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()  # never a clean end
