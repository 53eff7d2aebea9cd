"""HTTP through the engine's ``http`` trigger, next to a plain aiohttp server, in one session.

Two servers answer the same three routes:

* **plain**: an aiohttp server (one process) that just reads or writes the body;
* **iii**: a fresh engine, plus a worker process (our SDK) whose functions are bound to the routes with
  ``http`` triggers; every body streams through the request's channels.

The routes: ``PUT /upload`` reads the whole body and answers its size; ``GET /download/:size`` writes
``size`` bytes (1 MiB writes, chunked); ``POST /echo`` answers the JSON body it got. A client process
(aiohttp) measures, for each server in turn (interleaved run by run):

* **upload**: 1 GiB sent in 1 MiB blocks, from the first byte sent to the answer (checked: size);
* **download**: 1 GiB, from the request to the last byte (checked: size);
* **echo**: requests/s with 64 in flight (64 coroutines on one keep-alive pool), ~100-byte JSON bodies,
  after a warm-up; every answer is checked.

Targets (issue 4): upload and download at least 0.5x the plain server, echo at least 0.3x.

Run alone: ``python bench/http_triggers.py [--quick] [--repeat N]``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from _common import (
    GIB,
    MIB,
    Child,
    Measurement,
    bench_main,
    emit,
    engine_process,
    fmt_runs,
    median,
    run_role,
    run_sdk_role,
    sdk_worker,
)

CHILD_TIMEOUT_S: Final = 600.0
SCRIPT: Final = "http_triggers.py"
BLOCK: Final = MIB
IN_FLIGHT: Final = 64
ECHO_BODY: Final = {"id": 12345, "name": "benchmark", "tags": ["a", "b", "c"], "payload": "x" * 40}


# --- servers (child processes) ---------------------------------------------------------------------------


async def plain_main() -> None:
    """The plain aiohttp server: the same routes, no engine."""
    from aiohttp import web

    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.json_response({"bytes": size})

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        block = bytes(BLOCK)
        for _ in range(int(request.match_info["size"]) // BLOCK):
            await response.write(block)
        await response.write_eof()
        return response

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_put("/upload", upload)
    app.router.add_get("/download/{size}", download)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    emit("ready", url=f"http://127.0.0.1:{port}")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the driver closes stdin
    await runner.cleanup()


def worker_main(engine_url: str) -> None:
    """Our SDK's worker: the same routes as functions bound to http triggers."""
    from iii import HttpRequest

    client = sdk_worker(engine_url, "http")

    async def upload(data: dict[str, Any]) -> dict[str, int]:
        size = 0
        async for chunk in HttpRequest.of(data).request_body:
            size += len(chunk)
        return {"bytes": size}

    async def download(data: dict[str, Any]) -> None:
        request = HttpRequest.of(data)
        response = request.response
        await response.headers({"Content-Type": "application/octet-stream"})
        block = bytes(BLOCK)
        for _ in range(int(request.path_params["size"]) // BLOCK):
            await response.write(block)
        await response.close_async()

    async def echo(data: dict[str, Any]) -> Any:
        return data["body"]

    for function_id, handler, method, path in (
        ("bench::upload", upload, "PUT", "/upload"),
        ("bench::download", download, "GET", "/download/:size"),
        ("bench::echo", echo, "POST", "/echo"),
    ):
        client.register_function(function_id, handler)
        client.register_trigger(
            {"type": "http", "function_id": function_id, "config": {"api_path": path, "http_method": method}}
        )
    client.trigger({"function_id": "engine::triggers::list", "payload": {}})  # the bindings are in place
    emit("ready")
    sys.stdin.read()
    client.shutdown()


# --- the client (a child process) ------------------------------------------------------------------------


async def client_main(url: str, what: str, size: int, requests: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHILD_TIMEOUT_S)) as http:
        if what == "upload":
            block = bytes(BLOCK)

            async def body() -> AsyncIterator[bytes]:
                for _ in range(size // BLOCK):
                    yield block

            started = time.perf_counter()
            async with http.put(f"{url}/upload", data=body()) as response:
                answer = await response.json()
            seconds = time.perf_counter() - started
            if answer != {"bytes": size}:
                raise RuntimeError(f"upload answer {answer}")
            emit("result", seconds=seconds)
        elif what == "download":
            received = 0
            started = time.perf_counter()
            async with http.get(f"{url}/download/{size}") as response:
                async for chunk in response.content.iter_any():
                    received += len(chunk)
            seconds = time.perf_counter() - started
            if received != size:
                raise RuntimeError(f"downloaded {received} of {size} bytes")
            emit("result", seconds=seconds)
        else:
            await _echo_round(http, url, max(requests // 10, IN_FLIGHT))  # warm-up
            started = time.perf_counter()
            await _echo_round(http, url, requests)
            emit("result", seconds=time.perf_counter() - started, requests=requests)


async def _echo_round(http: Any, url: str, requests: int) -> None:
    remaining = requests

    async def one_client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with http.post(f"{url}/echo", json=ECHO_BODY) as response:
                if response.status != 200 or await response.json() != ECHO_BODY:
                    raise RuntimeError(f"echo answered {response.status}")

    await asyncio.gather(*(one_client() for _ in range(IN_FLIGHT)))


# --- the driver ------------------------------------------------------------------------------------------


def _client_run(url: str, what: str, size: int, requests: int) -> dict[str, Any]:
    args = ["--role", "client", "--url", url, "--what", what, "--size", str(size), "--requests", str(requests)]
    with Child(f"client-{what}", SCRIPT, args, CHILD_TIMEOUT_S) as client:
        return client.expect("result")


def measure(quick: bool, repeat: int) -> list[Measurement]:
    """Interleave plain and iii runs of upload, download and echo; one row per measurement plus ratios."""
    size = 64 * MIB if quick else GIB
    requests = 2_000 if quick else 20_000
    runs: dict[tuple[str, str], list[float]] = {}
    with (
        Child("plain", SCRIPT, ["--role", "plain"], CHILD_TIMEOUT_S) as plain,
        engine_process() as engine,
        Child("worker", SCRIPT, ["--role", "worker", "--url", engine.url], CHILD_TIMEOUT_S) as worker,
    ):
        plain_url = plain.expect("ready")["url"]
        worker.expect("ready")
        for _ in range(repeat):
            for what in ("upload", "download", "echo"):
                for server, url in (("plain", plain_url), ("iii", engine.http_url)):
                    result = _client_run(url, what, size, requests)
                    score = size / result["seconds"] / 1e9 if what != "echo" else requests / result["seconds"]
                    runs.setdefault((server, what), []).append(score)
    rows = []
    letters = iter("abcdef")
    for what, unit, target in (("upload", "GB/s", 0.5), ("download", "GB/s", 0.5), ("echo", "req/s", 0.3)):
        plain_score, iii_score = median(runs[("plain", what)]), median(runs[("iii", what)])
        digits = 2 if unit == "GB/s" else 0
        label = f"{what} {'of ' + ('64 MiB' if quick else '1 GiB') if what != 'echo' else f'({IN_FLIGHT} in flight)'}"
        rows.append(
            Measurement(
                f"8{next(letters)}. HTTP {label}, plain aiohttp server",
                f"{plain_score:,.{digits}f} {unit}",
                plain_score,
                None,
                "—",
                details=f"runs: {fmt_runs(runs[('plain', what)], digits)}",
            )
        )
        ratio = iii_score / plain_score
        rows.append(
            Measurement(
                f"8{next(letters)}. HTTP {label}, through the http trigger",
                f"{iii_score:,.{digits}f} {unit}",
                ratio,
                target,
                f">= {target}x plain",
                ratio_text=f"{ratio:.2f}x plain",
                details=f"runs: {fmt_runs(runs[('iii', what)], digits)}",
            )
        )
    return rows


def main() -> None:
    """Command line: run as the driver, or as one role when ``--role`` is given."""
    bench_main(
        __doc__,
        lambda args: measure(args.quick, args.repeat),
        {
            "plain": lambda args: run_role(plain_main, CHILD_TIMEOUT_S),
            "worker": lambda args: run_sdk_role(lambda: worker_main(args.url), CHILD_TIMEOUT_S),
            "client": lambda args: run_role(
                lambda: client_main(args.url, args.what, args.size, args.requests), CHILD_TIMEOUT_S
            ),
        },
        quick_help="64 MiB bodies and 2,000 echo requests, one run",
        default_repeat=3,
        role_options={"url": str, "what": str, "size": int, "requests": int},
    )


if __name__ == "__main__":
    main()
