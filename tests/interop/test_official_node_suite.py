"""The official Node SDK's own stream and state tests (iii repository, release ``iii/v0.22.1``) against our engine.

The npm package ``iii-sdk@0.22.1`` ships no tests, so they are read from a clone of the iii repository named by
``III_NODE_SDK_REPO`` (bare or not; it must hold the tag ``iii/v0.22.1``); without it this test is skipped. They
are extracted to ``build/interop/node-suite`` next to the published package and vitest (:func:`ensure_node_suite`)
and run there, unchanged, by ``node_suite/vitest.config.mjs``, which serves their imports of the SDK's sources
(``../src/index``, ``../src/helpers``) from the published package. The engine is configured as for the official
Python suite (``official_suite.toml``).

The files run (:data:`SUITE_FILES`) are those of streams and of the "bridge": ``stream.test.ts`` (every
``stream::*`` function, and a custom stream made with ``createStream``), ``bridge-stream.test.ts`` and
``bridge-state.test.ts``. The reference runs the bridge tests against a second engine whose stream and state
modules forward to a third (its ``bridge`` adapter); to the worker that engine is an engine serving ``stream::*``
and ``state::*``, so they run here against ours (``III_BRIDGE_WS_URL`` is our engine's address). Every test of
these files must pass, and the engine must log no warning or error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from iii.testing import EngineProcess
from tests.interop.environments import ensure_node_suite
from tests.interop.processes import child_env, engine_complaints, run_once, tail

HERE = Path(__file__).resolve().parent
ENGINE_CONFIG = HERE / "official_suite.toml"
SOURCE_ENV = "III_NODE_SDK_REPO"
SUITE_FILES: dict[str, int] = {"stream.test.ts": 14, "bridge-stream.test.ts": 7, "bridge-state.test.ts": 7}
"""The test files run, each with the number of its tests (all must pass)."""
RUN_TIMEOUT_S = 600.0


def file_counts(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per test file (its name), the number of tests by status, from vitest's JSON report."""
    counts: dict[str, dict[str, int]] = {}
    for result in report["testResults"]:
        per_status = counts.setdefault(Path(result["name"]).name, {})
        for assertion in result["assertionResults"]:
            per_status[assertion["status"]] = per_status.get(assertion["status"], 0) + 1
    return counts


def test_file_counts_reads_vitests_json_report() -> None:
    """The report reader counts each file's tests by status, so the test below cannot pass on a garbled run."""
    report = {
        "testResults": [
            {"name": "/x/suite/tests/a.test.ts", "assertionResults": [{"status": "passed"}, {"status": "failed"}]},
            {"name": "/x/suite/tests/b.test.ts", "assertionResults": [{"status": "passed"}] * 3},
            {"name": "/x/suite/tests/c.test.ts", "assertionResults": []},
        ]
    }
    assert file_counts(report) == {"a.test.ts": {"passed": 1, "failed": 1}, "b.test.ts": {"passed": 3}, "c.test.ts": {}}


@pytest.mark.timeout(1800)  # includes installing the npm packages on a cold machine
def test_the_official_node_sdk_stream_and_bridge_tests_pass(tmp_path: Path) -> None:
    """Proves the unchanged official Node SDK's own tests of streams (set, get, delete, list, list_groups,
    update with set/append/merge ops, a custom stream) and of state and streams through a bridge engine pass
    against our engine: every test of :data:`SUITE_FILES`, none failing or skipped."""
    source = os.environ.get(SOURCE_ENV)
    if not source:
        pytest.skip(f"set {SOURCE_ENV} to a clone of the iii repository (with its tag iii/v0.22.1) to run these")
    suite = ensure_node_suite(Path(source))
    report_file = tmp_path / "vitest.json"
    files = [f"suite/tests/{name}" for name in SUITE_FILES]  # vitest filters: relative to the project
    argv = ["node", suite.vitest, "run", "--reporter=verbose", "--reporter=json", f"--outputFile={report_file}"]
    with EngineProcess(["--config", str(ENGINE_CONFIG), "--rbac-port", "0"]) as engine:
        extra = {"III_HTTP_URL": engine.http_url, "III_BRIDGE_WS_URL": engine.url}
        code, out, err = run_once(
            [*argv, *files], cwd=suite.root, env=child_env(engine, extra), timeout_s=RUN_TIMEOUT_S
        )
        diagnostics = (
            f"vitest exited {code} (tests of {suite.commit})\n--- stdout:\n{tail(out, 200)}\n--- stderr:\n"
            f"{tail(err)}\n--- engine log:\n{tail(engine.log_text(), 60)}"
        )
        assert report_file.exists(), diagnostics
        counts = file_counts(json.loads(report_file.read_text()))
        assert code == 0, diagnostics
        assert counts == {name: {"passed": count} for name, count in SUITE_FILES.items()}, diagnostics
        assert not engine_complaints(engine), "\n".join(engine_complaints(engine))
