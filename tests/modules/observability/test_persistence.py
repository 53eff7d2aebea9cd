"""``[observability] persist = true``: the records kept survive a restart of the engine on the same data
directory, bounded like the rings, and what is cleared stays cleared.

Real engines (in-process, and one child process configured by its TOML file) started one after the other on one
data directory; telemetry sent on ``/otel`` by a raw WebSocket as the SDKs frame it, and asked back from the
observability module's functions by a raw worker.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii.engine.server import Engine
from iii.modules.observability import ObservabilityModule
from iii.modules.observability.persistence import FILE_NAME
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker, connect_raw, eventually
from tests.modules.observability.frames import CHILD, ROOT, logs_message, metrics_message, span, spans_message

StartEngine = Callable[..., Awaitable[Engine]]


def observability(engine: Engine) -> ObservabilityModule:
    module = next(module for module in engine.modules.modules if module.name == "observability")
    assert isinstance(module, ObservabilityModule)
    return module


async def everything(worker: RawWorker) -> dict[str, Any]:
    """What the engine serves of its logs, spans and metrics."""
    return {
        "logs": (await worker.result_of("engine::logs::list", {"limit": 1000}))["logs"],
        "spans": (await worker.result_of("engine::traces::list", {"search_all_spans": True, "limit": 1000}))["spans"],
        "metrics": (await worker.result_of("engine::metrics::list", {}))["sdk_metrics"],
    }


async def test_records_survive_a_restart_on_the_same_data_dir(start_engine: StartEngine, tmp_path: Path) -> None:
    settings = {"observability": {"persist": True}}
    first = await start_engine(data_dir=str(tmp_path), module_settings=settings)
    worker = await RawWorker.connect(first.url)
    telemetry = await connect_raw(first.url + "/otel")
    await telemetry.send(logs_message("first", "second"))
    await telemetry.send(spans_message(span("execute orders.create", ROOT), span("call", CHILD, parent=ROOT)))
    await telemetry.send(metrics_message("worker.memory", 42))
    await worker.result_of("engine::log::error", {"message": "from the engine", "data": {"n": 1}})
    await eventually(lambda: len(observability(first).logs) == 3 and len(observability(first).metric_points) == 1)
    before = await everything(worker)
    await telemetry.close()
    await worker.close()
    await first.stop()

    second = await start_engine(data_dir=str(tmp_path), module_settings=settings)
    worker = await RawWorker.connect(second.url)
    after = await everything(worker)
    assert after == before
    assert [row["body"] for row in after["logs"]] == ["from the engine", "second", "first"]
    assert len(after["spans"]) == 2 and after["metrics"][0]["name"] == "worker.memory"


async def test_the_file_is_bounded_like_the_rings_and_a_restart_keeps_the_newest(
    start_engine: StartEngine, tmp_path: Path
) -> None:
    settings = {"observability": {"persist": True, "logs_max_count": 5}}
    first = await start_engine(data_dir=str(tmp_path), module_settings=settings)
    persisted = observability(first)._persisted
    assert persisted is not None
    telemetry = await connect_raw(first.url + "/otel")
    for round_ in range(4):  # four writes: the file trims the oldest rows as it goes
        for index in range(3):
            await telemetry.send(logs_message(f"line {round_ * 3 + index}"))
        await eventually(lambda r=round_: persisted.written["logs"] == (r + 1) * 3 and not persisted._behind)
        with sqlite3.connect(tmp_path / FILE_NAME) as file:
            count, rows = file.execute("SELECT SUM(count), COUNT(*) FROM records WHERE signal = 'logs'").fetchone()
        assert count <= 5 + 3 and rows <= 3, (count, rows)  # the ring's bound, and at most one row more
    await telemetry.close()
    await first.stop()

    second = await start_engine(data_dir=str(tmp_path), module_settings=settings)
    worker = await RawWorker.connect(second.url)
    logs = (await worker.result_of("engine::logs::list", {}))["logs"]
    assert [row["body"] for row in logs] == [f"line {index}" for index in range(11, 6, -1)]


async def test_what_is_cleared_does_not_come_back(start_engine: StartEngine, tmp_path: Path) -> None:
    settings = {"observability": {"persist": True}}
    first = await start_engine(data_dir=str(tmp_path), module_settings=settings)
    worker = await RawWorker.connect(first.url)
    telemetry = await connect_raw(first.url + "/otel")
    await telemetry.send(logs_message("cleared"))
    await telemetry.send(spans_message(span("execute kept", ROOT)))
    await eventually(lambda: len(observability(first).logs) == 1 and len(observability(first).spans) == 1)
    assert await worker.result_of("engine::logs::clear", {}) == {"success": True}
    await telemetry.send(logs_message("after the clear"))
    await eventually(lambda: len(observability(first).logs) == 1)
    await telemetry.close()
    await worker.close()
    await first.stop()

    second = await start_engine(data_dir=str(tmp_path), module_settings=settings)
    worker = await RawWorker.connect(second.url)
    restored = await everything(worker)
    assert [row["body"] for row in restored["logs"]] == ["after the clear"]
    assert [row["name"] for row in restored["spans"]] == ["execute kept"]


async def test_without_persist_nothing_is_written_or_restored(start_engine: StartEngine, tmp_path: Path) -> None:
    first = await start_engine(data_dir=str(tmp_path))
    telemetry = await connect_raw(first.url + "/otel")
    await telemetry.send(logs_message("in memory only"))
    await eventually(lambda: len(observability(first).logs) == 1)
    await telemetry.close()
    await first.stop()
    assert not (tmp_path / FILE_NAME).exists()
    second = await start_engine(data_dir=str(tmp_path))
    assert len(observability(second).logs) == 0


async def test_an_engine_process_configured_to_persist_keeps_its_logs_across_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text("[observability]\npersist = true\n")
    args = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    with EngineProcess(args) as engine:
        worker = await RawWorker.connect(engine.url)
        await worker.result_of("engine::log::info", {"message": "before the restart"})
        await worker.close()
    with EngineProcess(args) as engine:
        worker = await RawWorker.connect(engine.url)
        logs = (await worker.result_of("engine::logs::list", {}))["logs"]
        await worker.close()
    assert [row["body"] for row in logs] == ["before the restart"]
    assert "backend=memory+sqlite" in engine.log_text()


async def test_a_persist_setting_that_is_not_a_boolean_is_refused(start_engine: StartEngine) -> None:
    with pytest.raises(ValueError, match="persist = true or false"):
        await start_engine(module_settings={"observability": {"persist": "yes"}})
