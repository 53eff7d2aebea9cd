"""The official Python SDK (PyPI ``iii-sdk`` 0.25.0) at the RBAC worker listener, unchanged: admitted by an auth
function that reads its headers, its calls through the middleware, a call it is not allowed refused with the
reference's error, and its own function registered under the prefix the auth function gave and served under its
own id. The trusted side is our SDK on the engine's own port (the whole official suite's RBAC tests, with the
official SDK on both sides, run in ``test_official_python_sdk.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii import InitOptions, register_worker
from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

SCRIPT = Path(__file__).resolve().parent / "official_python_rbac.py"
TOKEN = "Partner-Secret-31415"
CONFIG = """
[rbac]
auth_function_id = "trusted::auth"
middleware_function_id = "trusted::middleware"
expose_functions = ['match("api::*")', 'match("engine::functions::list")']
"""

pytestmark = pytest.mark.timeout(1200)  # includes building the official environment on a cold machine


@pytest.fixture
def rbac_engine(tmp_path: Path) -> Iterator[EngineProcess]:
    config = tmp_path / "engine.toml"
    config.write_text(CONFIG)
    with EngineProcess(["--config", str(config), "--rbac-port", "0", "--http-port", "-1"]) as engine:
        yield engine


def test_an_official_worker_is_admitted_limited_and_served_under_its_prefix(
    official_python: PythonEnv, rbac_engine: EngineProcess
) -> None:
    engine = rbac_engine
    auth_inputs: list[dict[str, Any]] = []

    def auth(data: dict[str, Any]) -> dict[str, Any]:
        auth_inputs.append(data)
        if data["headers"].get("x-partner-token") != TOKEN:
            raise ValueError("unknown partner")
        return {"function_registration_prefix": "partner", "context": {"partner": "acme"}}

    with register_worker(engine.url, InitOptions(worker_name="trusted")) as trusted:

        def middleware(data: dict[str, Any]) -> Any:
            payload = {**data["payload"], "partner": data["context"]["partner"]}
            return trusted.trigger({"function_id": data["function_id"], "payload": payload})

        refs = [
            trusted.register_function("trusted::auth", auth),
            trusted.register_function("trusted::middleware", middleware),
            trusted.register_function("api::echo", lambda data: {"api": data}),
            trusted.register_function("internal::secret", lambda data: {"leaked": True}),
        ]
        assert all(ref.wait_active(10) for ref in refs)
        plan = {
            "token": TOKEN,
            "calls": [["api::echo", {"n": 1}], ["internal::secret", {}], ["engine::functions::list", {}]],
        }
        env = child_env(engine, {"III_RBAC_WORKER_URL": engine.rbac_url})
        argv = [official_python.python, SCRIPT, json.dumps(plan)]
        with WorkerProcess("official python partner", argv, cwd=official_python.root, env=env) as partner:
            try:
                result = partner.expect("RESULT", 60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text(), 60)}") from None
            served = trusted.trigger({"function_id": "partner::echo", "payload": {"from": "trusted"}})
            trusted_id = trusted.worker_id

    echo, secret, listing = result["calls"]
    assert echo == {"ok": True, "result": {"api": {"n": 1, "partner": "acme"}}}  # through the middleware
    assert secret["ok"] is False and secret["code"] == "FORBIDDEN"
    assert secret["function_id"] == "internal::secret" and "rbac.expose_functions" in secret["message"]
    ids = {row["function_id"] for row in listing["result"]["functions"]}
    assert {"api::echo", "partner::echo"} <= ids  # exposed, and its own (under the engine's id)
    assert not {"internal::secret", "trusted::auth", "trusted::middleware"} & ids
    # Served under its own id, "echo"; the official SDK leaves the engine's caller id in the payload.
    assert served == {"echoed": {"from": "trusted", "_caller_worker_id": trusted_id}, "sdk": "official-python"}
    [auth_input] = auth_inputs
    assert auth_input["headers"]["x-partner-token"] == TOKEN
    assert TOKEN not in engine.log_text()
    assert not engine_complaints(engine)
