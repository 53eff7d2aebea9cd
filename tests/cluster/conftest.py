"""Fixtures of the cluster tests: two engine processes joined on a real Redis, and the official SDKs."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from iii.testing import EngineProcess
from tests.interop.conftest import NODE_SCRIPTS, node_env, official_python
from tests.interop.environments import NodeEnv
from tests.redis_server import RedisServer

__all__ = ["node_env", "official_python"]  # the interop fixtures, used here too

_JOINED = re.compile(r"cluster: engine (\S+) at \S+ joined")
CLUSTER_NODE_SCRIPTS = Path(__file__).resolve().parent / "node"


@dataclass
class TwoEngines:
    """Engines ``a`` and ``b``, two processes in one cluster on ``redis``."""

    redis: RedisServer
    a: EngineProcess
    b: EngineProcess


def engine_id(engine: EngineProcess) -> str:
    """The id an engine of a cluster has there, from its log."""
    match = _JOINED.search(engine.wait_for_log("cluster: engine "))
    assert match is not None, engine.log_text()
    return match.group(1)


@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[TwoEngines]:
    """Two engine processes started with ``--redis-url`` of a fresh Redis (started side by side: each takes a
    second or so to import); both stopped afterwards (an engine a test killed stops at once)."""
    engines = [EngineProcess(["--redis-url", redis_server.url]) for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(engine.start) for engine in engines]:
                started.result()
        yield TwoEngines(redis_server, *engines)
    finally:
        for engine in engines:
            engine.stop()


@pytest.fixture(scope="session")
def cluster_node_scripts(node_env: NodeEnv) -> Iterator[Path]:
    """The Node scripts of the interop tests and of these tests, copied inside the npm project (Node resolves
    ``import 'iii-sdk'`` from a script's own location); removed after the session."""
    target = Path(tempfile.mkdtemp(prefix="cluster-scripts-", dir=node_env.root))
    try:
        for script in [*NODE_SCRIPTS.glob("*.mjs"), *CLUSTER_NODE_SCRIPTS.glob("*.mjs")]:
            shutil.copy2(script, target / script.name)
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)
