"""The official SDKs, unchanged, on either engine of a cluster (issue 15, item 1): PyPI ``iii-sdk`` 0.25.0 and
npm ``iii-sdk`` 0.22.1 each serve a function on one engine that is called from the other, by our SDK and by the
other official SDK, so every call crosses the two engines in both directions."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from iii import InitOptions, register_worker
from iii.testing import EngineProcess
from tests.cluster.conftest import TwoEngines
from tests.cluster.polling import call_when_known
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, run_once, tail

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine

OFFICIAL_PYTHON = Path(__file__).resolve().parent / "official_python.py"
READY_TIMEOUT_S = 60
CALL_TIMEOUT_S = 60


def echoed(answer: dict[str, Any]) -> dict[str, Any]:
    """An official worker's answer without the caller id the engine put in the payload (official handlers
    see it, as on one engine: the id of the caller on the handler's own engine, the link for a call that
    came from the other engine)."""
    assert isinstance(answer["echo"].pop("_caller_worker_id"), str), answer
    return answer


def node() -> str:
    executable = shutil.which("node")
    assert executable is not None, "node must be on PATH for the official Node SDK"
    return executable


def official_call(argv: list[Any], cwd: Path, engine: EngineProcess, function_id: str, payload: Any) -> Any:
    """Call ``function_id`` from a one-shot official caller (``argv``) at ``engine``; its result."""
    code, out, err = run_once(
        [*argv, function_id], cwd=cwd, env=child_env(engine), timeout_s=CALL_TIMEOUT_S, stdin_text=json.dumps(payload)
    )
    results = [line.removeprefix("RESULT ") for line in out.splitlines() if line.startswith("RESULT ")]
    assert code == 0 and len(results) == 1, f"exit code {code}\n{tail(out)}\n{tail(err)}\n{tail(engine.log_text())}"
    return json.loads(results[0])


@pytest.fixture
def official_workers(cluster: TwoEngines, official_python: PythonEnv, cluster_node_scripts: Path) -> Iterator[None]:
    """An official Python worker on B serving ``cluster.python.echo``, an official Node worker on A serving
    ``cluster.node.echo``; each ready once its own engine lists its function."""
    with ExitStack() as stack:
        python_argv = [official_python.python, OFFICIAL_PYTHON, "serve", "cluster.python.echo"]
        node_argv = [node(), "echo.mjs", "cluster.node.echo"]
        workers = [
            WorkerProcess("official python on B", python_argv, cwd=official_python.root, env=child_env(cluster.b)),
            WorkerProcess("official node on A", node_argv, cwd=cluster_node_scripts, env=child_env(cluster.a)),
        ]
        for worker in workers:
            stack.enter_context(worker)
        for worker in workers:
            worker.wait_ready(READY_TIMEOUT_S)
        yield


@pytest.mark.usefixtures("official_workers")
def test_official_workers_serve_across_the_engines_and_official_callers_reach_across(
    cluster: TwoEngines, official_python: PythonEnv, cluster_node_scripts: Path
) -> None:
    with (
        register_worker(cluster.a.url, InitOptions(worker_name="ours-on-a")) as ours_on_a,
        register_worker(cluster.b.url, InitOptions(worker_name="ours-on-b")) as ours_on_b,
    ):
        # Our SDK on one engine calls the official worker on the other.
        answer, _ = call_when_known(ours_on_a, "cluster.python.echo", {"from": "ours on A"}, timeout_s=5)
        assert echoed(answer) == {"echo": {"from": "ours on A"}, "sdk": "official-python"}
        answer, _ = call_when_known(ours_on_b, "cluster.node.echo", {"from": "ours on B"}, timeout_s=5)
        assert echoed(answer) == {"echo": {"from": "ours on B"}, "sdk": "official-node"}

    # Each official SDK calls, from one engine, the other official SDK's worker on the other engine.
    node_caller = [node(), "call.mjs"]
    answer = official_call(node_caller, cluster_node_scripts, cluster.a, "cluster.python.echo", {"from": "node on A"})
    assert echoed(answer) == {"echo": {"from": "node on A"}, "sdk": "official-python"}
    python_caller = [official_python.python, OFFICIAL_PYTHON, "call"]
    answer = official_call(python_caller, official_python.root, cluster.b, "cluster.node.echo", {"from": "python on B"})
    assert echoed(answer) == {"echo": {"from": "python on B"}, "sdk": "official-node"}

    for engine in (cluster.a, cluster.b):
        assert not engine_complaints(engine), engine_complaints(engine)
