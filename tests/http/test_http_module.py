"""The http module: how the engine runs it (its flags, its port, none with --http-port -1), and the same module
as its own worker (``iii worker http``) next to an engine that serves no HTTP: bodies then stream through the SDK's
channels instead of the engine's own ends."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from iii import HttpRequest, InitOptions, http_response, register_worker
from iii.engine import Engine, EngineConfig
from iii.testing import EngineProcess
from tests.http.conftest import bind, routes_ready

TIMEOUT = aiohttp.ClientTimeout(total=60)
_SERVING = re.compile(r"module=http serving as worker \S+ on (http://\S+)")


def test_http_is_not_listed_in_modules_and_takes_its_settings_from_the_http_flags() -> None:
    with pytest.raises(ValueError, match="http is not listed here: it runs unless http_port is -1"):
        EngineConfig(modules="state,http")
    with pytest.raises(ValueError, match=r"\[http\]: its settings are the engine's own"):
        EngineConfig(module_settings={"http": {"port": 8080}})


async def test_with_http_port_minus_one_the_engine_serves_no_http(
    start_engine: Callable[..., Awaitable[Engine]],
) -> None:
    engine = await start_engine(http_port=-1)
    assert engine.http is None
    assert not engine.triggers.is_builtin("http")  # a worker may provide the type itself
    assert 'module="http"' not in engine.metrics.render().decode()  # no sample of the http module's


def test_an_http_port_in_use_is_a_clear_error(engine: EngineProcess) -> None:
    http_port = engine.http_url.rsplit(":", 1)[1]
    clash = subprocess.run(
        [sys.executable, "-m", "iii", "engine", "--port", "0", "--stream-port", "-1", "--http-port", http_port],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert clash.returncode == 1
    assert f"cannot serve HTTP triggers on 127.0.0.1:{http_port}" in clash.stderr
    assert "(set --http-port, -1 for none)" in clash.stderr and "Traceback" not in clash.stderr


class ModuleWorker:
    """``iii worker http`` in a child process, with its log read by a thread."""

    def __init__(self, engine_url: str, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "iii", "worker", "http", "--url", engine_url, "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.url = ""
        self._serving = threading.Event()
        assert self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            if found := _SERVING.search(line):
                self.url = found.group(1)
                self._serving.set()
        self._serving.set()

    def wait_serving(self) -> str:
        assert self._serving.wait(30) and self.url, "".join(self.lines)
        return self.url

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(15)


@pytest.fixture
def worker_served(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """An engine without HTTP, the http module as its own worker, and a worker whose functions it serves."""
    config = tmp_path / "http.toml"
    config.write_text("http_port = 0\nhttp_timeout_s = 10\n")
    with EngineProcess(["--http-port", "-1", "--modules", ""]) as engine:
        module = ModuleWorker(engine.url, config)
        try:
            url = module.wait_serving()
            with register_worker(engine.url, InitOptions(worker_name="user")) as client:

                def hello(data: dict[str, Any]) -> Any:
                    request = HttpRequest.of(data)
                    return http_response({"hello": request.path_params["name"], "body": request.body}, 201)

                async def sha256(data: dict[str, Any]) -> dict[str, Any]:
                    digest, size = hashlib.sha256(), 0
                    async for chunk in HttpRequest.of(data).request_body:
                        digest.update(chunk)
                        size += len(chunk)
                    return {"sha256": digest.hexdigest(), "bytes": size}

                async def download(data: dict[str, Any]) -> None:
                    request = HttpRequest.of(data)
                    response = request.response
                    await response.status(200)
                    await response.headers({"Content-Type": "application/octet-stream", "X-Blocks": "16"})
                    for index in range(16):
                        await response.write(bytes([index]) * 65536)
                    await response.close_async()

                bind(client, "w.hello", hello, "POST", "/hello/:name")
                bind(client, "w.sha256", sha256, "PUT", "/sha256")
                bind(client, "w.download", download, "GET", "/download")
                routes_ready(client)
                yield url, client
        finally:
            assert module.stop() == 0, "".join(module.lines)


async def _routes_served(url: str, paths: list[str], timeout_s: float = 15) -> None:
    """Bindings reach a module in a worker over the wire: ask until each path is routed (a method it was not bound
    for gets 405 instead of 404)."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, asyncio.timeout(timeout_s):
        for path in paths:
            while True:
                async with http.delete(f"{url}{path}") as response:
                    if response.status == 405:
                        break


async def test_the_http_module_serves_as_its_own_worker_with_streamed_bodies(worker_served: tuple[str, Any]) -> None:
    url, client = worker_served
    await _routes_served(url, ["/hello/x", "/sha256", "/download"])
    upload = bytes(range(256)) * 12_289  # ~3 MiB, in many pieces
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.post(f"{url}/hello/ada", json={"n": 1}) as response:
            assert response.status == 201
            assert await response.json() == {"hello": "ada", "body": {"n": 1}}
        async with http.put(f"{url}/sha256", data=upload) as response:
            assert response.status == 200
            assert await response.json() == {"sha256": hashlib.sha256(upload).hexdigest(), "bytes": len(upload)}
        async with http.get(f"{url}/download") as response:
            assert (response.status, response.headers["X-Blocks"]) == (200, "16")
            assert await response.read() == b"".join(bytes([index]) * 65536 for index in range(16))
        async with http.get(f"{url}/nothing") as response:
            assert (response.status, (await response.json())["error"]["code"]) == (404, "NOT_FOUND")
        answers = await asyncio.gather(*(_status(http, f"{url}/hello/{index}") for index in range(20)))
        assert answers == [201] * 20
    async with asyncio.timeout(15):  # every exchange released its channels: nothing waits for the TTL
        while (await client.trigger_async({"function_id": "engine::channels::list"}))["channels"]:
            pass  # asked again: the last exchanges' ends close over their own sockets


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.post(url, json=None) as response:
        await response.read()
        return response.status
