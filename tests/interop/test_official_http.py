"""Workers on the official SDKs (PyPI ``iii-sdk`` 0.25.0, npm ``iii-sdk`` 0.22.1 with ``@iii-dev/helpers``)
answer HTTP through our engine's ``http`` trigger: bound with the official ``register_trigger`` /
``registerTrigger``, reading the request body from the materialized reader, streaming with the official
``StreamResponse`` (Python) and ``http()`` helper (Node), and guarding a route with a middleware function
(``middleware_function_ids``) written with each SDK."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, tail

PYTHON_WORKER = Path(__file__).resolve().parent / "official_python_worker.py"

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine


def pattern(length: int) -> bytes:
    """The bytes ``official_python_worker.py`` and ``roles.mjs`` write."""
    return bytes((i * 31 + (i >> 10)) % 251 for i in range(length))


@pytest.fixture(params=["python", "node"])
def official(request: pytest.FixtureRequest, engine: EngineProcess) -> Iterator[tuple[str, EngineProcess]]:
    """``(sdk, engine)``: an official worker serving ``/interop/<sdk>/upload`` and ``/interop/<sdk>/stream/:size``."""
    sdk: str = request.param
    argv: list[str | Path]
    if sdk == "python":
        official_python: PythonEnv = request.getfixturevalue("official_python")
        cwd = official_python.root
        argv = [official_python.python, PYTHON_WORKER]
    else:
        node = shutil.which("node")
        assert node is not None, "node must be on PATH for the Node SDK interop tests"
        cwd = request.getfixturevalue("node_scripts")
        argv = [node, "worker.mjs", "interop.node.http"]
    with WorkerProcess(f"official {sdk} worker", argv, cwd=cwd, env=child_env(engine)) as worker:
        try:
            worker.wait_ready(60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text())}") from None
        yield sdk, engine


async def test_an_official_worker_serves_an_upload_and_a_streamed_download(
    official: tuple[str, EngineProcess],
) -> None:
    sdk, engine = official
    base = f"{engine.http_url}/interop/{sdk}"
    body = pattern(3 * 1024 * 1024 + 7)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        # The worker says READY once its functions are listed; its bindings were sent before that call.
        async with http.put(f"{base}/upload", data=body) as response:
            assert response.status == 201
            assert response.headers["X-Handled-By"] == f"official-{sdk}"
            assert await response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
        async with http.get(f"{base}/stream/{len(body)}") as response:
            assert response.status == 206
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert response.headers["X-Handled-By"] == f"official-{sdk}"
            assert await response.read() == body


async def test_an_official_middleware_lets_requests_through_or_answers_them(
    official: tuple[str, EngineProcess],
) -> None:
    sdk, engine = official
    base = f"{engine.http_url}/interop/{sdk}/guarded"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.get(f"{base}/7") as response:
            assert response.status == 401
            assert response.headers["X-Rejected-By"] == f"official-{sdk}"
            assert await response.json() == {"error": "no pass", "method": "GET", "id": "7"}
        async with http.get(f"{base}/8", headers={"X-Pass": "yes"}) as response:
            assert response.status == 200
            assert await response.json() == {"id": "8", "sdk": f"official-{sdk}"}
