"""How the engine runs the rbac module: only with --rbac-port, its address from the --rbac-* flags, the rest from
the [rbac] table of the TOML file; what it says when it cannot."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from iii.engine import Engine, EngineConfig
from iii.engine.modules import build
from iii.modules.rbac import RbacModule
from iii.testing import EngineProcess

TABLE = """
[rbac]
auth_function_id = "trusted::auth"
expose_functions = ['match("api::*")', { metadata = { public = true } }]
"""


def test_rbac_is_not_listed_in_modules_and_its_address_comes_from_the_flags() -> None:
    with pytest.raises(ValueError, match="rbac is not listed here: it runs when rbac_port is set"):
        EngineConfig(modules="state,rbac")
    with pytest.raises(ValueError, match=r"rbac_port must be 0\.\.65535"):
        EngineConfig(rbac_port=70000)
    with pytest.raises(ValueError, match=r"\[rbac\]: port: the engine's own setting\(s\) \(--rbac-port\)"):
        build("rbac", EngineConfig(rbac_port=0, module_settings={"rbac": {"port": 1}}))
    with pytest.raises(ValueError, match=r"\[rbac\]: unknown setting\(s\) auth_function"):
        build("rbac", EngineConfig(rbac_port=0, module_settings={"rbac": {"auth_function": "x"}}))
    module = build(
        "rbac", EngineConfig(rbac_host="0.0.0.0", rbac_port=5, module_settings={"rbac": {"auth_function_id": "a"}})
    )
    assert isinstance(module, RbacModule)
    assert (module.settings.host, module.settings.port, module.settings.auth_function_id) == ("0.0.0.0", 5, "a")


async def test_without_rbac_port_there_is_no_listener(
    start_engine: Callable[..., Awaitable[Engine]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        engine = await start_engine(module_settings={"rbac": {"auth_function_id": "a"}})
    assert engine.rbac is None
    assert "[rbac] settings given but no rbac_port (--rbac-port): the RBAC worker listener is off" in caplog.text


def test_the_engine_says_where_the_listener_is_and_serves_it_on_loopback(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(TABLE)
    with EngineProcess(["--config", str(config), "--rbac-port", "0"]) as engine:
        assert engine.rbac_url.startswith("ws://127.0.0.1:")
        assert engine.rbac_url != engine.url
        log = engine.log_text()
        assert f"module=rbac serves workers on {engine.rbac_url}" in log
        assert "module=rbac started" in log
        # The listener's port is taken: another engine cannot have it, and says which flag to change.
        rbac_port = engine.rbac_url.rsplit(":", 1)[1]
        clash = subprocess.run(
            [
                sys.executable,
                "-m",
                "iii",
                "engine",
                "--port",
                "0",
                "--http-port",
                "-1",
                "--stream-port",
                "-1",
                "--rbac-port",
                rbac_port,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert clash.returncode == 1
    assert f"cannot listen on 127.0.0.1:{rbac_port}" in clash.stderr
    assert "(set --rbac-port, 0 for any free port)" in clash.stderr and "Traceback" not in clash.stderr


def test_the_rbac_module_says_it_runs_inside_the_engine_only() -> None:
    with EngineProcess(["--modules", ""]) as engine:
        completed = subprocess.run(
            [sys.executable, "-m", "iii", "worker", "rbac", "--url", engine.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert completed.returncode == 1
    assert "runs inside the engine only" in completed.stderr
    assert "Traceback" not in completed.stderr
