"""A worker on the official PyPI ``iii-sdk`` 0.25.0 answers HTTP through our engine's ``http`` trigger:
bound with the official ``register_trigger``, reading the request body from its materialized reader and
streaming with the official ``StreamResponse``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, tail

PYTHON_WORKER = Path(__file__).resolve().parent / "official_python_worker.py"

pytestmark = pytest.mark.timeout(1200)  # includes building the official environment on a cold machine


def pattern(length: int) -> bytes:
    """The bytes ``official_python_worker.py`` writes."""
    return bytes((i * 31 + (i >> 10)) % 251 for i in range(length))


@pytest.fixture
def official_http(engine: EngineProcess, official_python: PythonEnv) -> Iterator[EngineProcess]:
    argv: list[str | Path] = [official_python.python, PYTHON_WORKER]
    with WorkerProcess("official python worker", argv, cwd=official_python.root, env=child_env(engine)) as worker:
        try:
            worker.wait_ready(60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text())}") from None
        yield engine


async def test_an_official_worker_serves_an_upload_and_a_streamed_download(official_http: EngineProcess) -> None:
    base = official_http.http_url
    body = pattern(3 * 1024 * 1024 + 7)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.put(f"{base}/interop/python/upload", data=body) as response:
            assert response.status == 201
            assert response.headers["X-Handled-By"] == "official-python"
            assert await response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
        async with http.get(f"{base}/interop/python/stream/{len(body)}") as response:
            assert response.status == 206
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert response.headers["X-Handled-By"] == "official-python"
            assert await response.read() == body
