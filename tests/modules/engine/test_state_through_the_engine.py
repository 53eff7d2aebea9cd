"""The state module inside a real engine process: what workers see, and what survives the engine's death."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii import InitOptions, InvocationError, register_worker
from iii.testing import EngineProcess


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="iii-state-") as path:
        yield Path(path)


def test_state_written_through_the_engine_survives_kill_9_and_a_restart(data_dir: Path) -> None:
    """Every write is durable when its call answers: a SIGKILL right after the answers loses nothing."""
    with EngineProcess(["--data-dir", str(data_dir)]) as engine:
        with register_worker(engine.url, InitOptions(worker_name="writer")) as client:
            for index in range(50):
                payload = {"scope": "orders", "key": f"o{index}", "value": {"n": index}}
                client.trigger({"function_id": "state::set", "payload": payload})
            ops = [{"type": "increment", "path": "n", "by": 100}]
            client.trigger({"function_id": "state::update", "payload": {"scope": "orders", "key": "o7", "ops": ops}})
        engine.kill()
    with EngineProcess(["--data-dir", str(data_dir)]) as engine, register_worker(engine.url) as client:
        listed = client.trigger({"function_id": "state::list", "payload": {"scope": "orders"}})
        expected = sorted(index + 100 if index == 7 else index for index in range(50))
        assert sorted(item["n"] for item in listed) == expected
        assert client.trigger({"function_id": "state::get", "payload": {"scope": "orders", "key": "o7"}}) == {"n": 107}


def test_bad_state_calls_get_clear_errors_through_the_engine(engine: EngineProcess) -> None:
    with register_worker(engine.url, InitOptions(worker_name="bad")) as client:
        with pytest.raises(InvocationError) as missing_key:
            client.trigger({"function_id": "state::set", "payload": {"scope": "s", "value": 1}})
        assert missing_key.value.code == "deserialization_error"
        with pytest.raises(InvocationError) as conflict:
            client.trigger(
                {"function_id": "state::set", "payload": {"scope": "s", "key": "k", "value": 1, "expected_version": 5}}
            )
        assert conflict.value.code == "version_mismatch"


def test_the_engine_refuses_an_unknown_module_and_an_unknown_setting(data_dir: Path) -> None:
    config = data_dir / "engine.toml"
    config.write_text('modules = "state"\n[state]\nmax_value_bytez = 10\n')
    with pytest.raises(RuntimeError, match="max_value_bytez"):
        EngineProcess(["--config", str(config), "--data-dir", str(data_dir)], start_timeout_s=15).start()
    with pytest.raises(RuntimeError, match="unknown module 'stat'"):
        EngineProcess(["--modules", "stat"], start_timeout_s=15).start()
