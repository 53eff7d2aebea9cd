"""What an answered write promises: it survives a restart and a kill -9 (SQLite), concurrent updates of one
key all count (both backends, and several modules on one store), and writes are committed in groups."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from iii.modules.state import StateModule, StateSettings
from iii.modules.state.store import StoreError
from tests.modules.local_host import LocalHost
from tests.modules.state.conftest import StartModule
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[3]


async def started(settings: StateSettings) -> tuple[StateModule, LocalHost]:
    module = StateModule(settings)
    host = LocalHost()
    await module.start(host)
    return module, host


def increment(key: str = "counter") -> dict[str, object]:
    return {"scope": "s", "key": key, "ops": [{"type": "increment", "path": "n", "by": 1}]}


async def test_200_concurrent_increments_of_one_key_give_200(start_module: StartModule) -> None:
    _, host = await start_module()
    results = await asyncio.gather(*(host.call("state::update", increment()) for _ in range(200)))
    assert sorted(result["new_value"]["n"] for result in results) == list(range(1, 201))
    assert await host.call("state::get", {"scope": "s", "key": "counter", "with_version": True}) == {
        "value": {"n": 200},
        "version": 200,
    }


async def test_two_modules_on_one_redis_share_state(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = StateSettings(data_dir=tmp_path, redis_url=redis_server.url)
    (first, one), (second, other) = await started(settings), await started(settings)
    try:
        await one.call("state::set", {"scope": "shared", "key": "k", "value": {"from": "one"}})
        assert await other.call("state::get", {"scope": "shared", "key": "k"}) == {"from": "one"}
        await asyncio.gather(*(host.call("state::update", increment()) for host in (one, other) for _ in range(100)))
        assert await one.call("state::get", {"scope": "s", "key": "counter"}) == {"n": 200}
        assert await other.call("state::list_groups", {}) == {"groups": ["s", "shared"]}
    finally:
        await first.stop()
        await second.stop()


async def test_two_modules_on_one_sqlite_file_do_not_lose_increments(tmp_path: Path) -> None:
    """Each module has its own writer; SQLite's write lock (BEGIN IMMEDIATE) keeps read-change-write atomic."""
    settings = StateSettings(data_dir=tmp_path)
    (first, one), (second, other) = await started(settings), await started(settings)
    try:
        await asyncio.gather(*(host.call("state::update", increment()) for host in (one, other) for _ in range(100)))
        assert await other.call("state::get", {"scope": "s", "key": "counter"}) == {"n": 200}
    finally:
        await first.stop()
        await second.stop()


async def test_a_sqlite_write_survives_a_restart(tmp_path: Path) -> None:
    settings = StateSettings(data_dir=tmp_path)
    module, host = await started(settings)
    await host.call("state::set", {"scope": "s", "key": "k", "value": {"kept": True}})
    await host.call("state::update", increment("k"))
    await module.stop()

    module, host = await started(settings)
    try:
        assert await host.call("state::get", {"scope": "s", "key": "k", "with_version": True}) == {
            "value": {"kept": True, "n": 1},
            "version": 2,
        }
        assert (await host.call("state::update", increment("k")))["version"] == 3
    finally:
        await module.stop()


async def test_stop_finishes_the_writes_under_way(tmp_path: Path) -> None:
    settings = StateSettings(data_dir=tmp_path)
    module, host = await started(settings)
    writes = [
        asyncio.ensure_future(host.call("state::set", {"scope": "s", "key": f"k{i}", "value": i})) for i in range(100)
    ]
    await asyncio.sleep(0)  # one turn of the loop: every write is handed to the store
    await module.stop()
    assert [result["new_value"] for result in await asyncio.gather(*writes)] == list(range(100))

    module, host = await started(settings)
    try:
        assert len(await host.call("state::list", {"scope": "s"})) == 100
    finally:
        await module.stop()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    module, host = await started(StateSettings(data_dir=tmp_path))
    try:
        await asyncio.gather(*(host.call("state::set", {"scope": "s", "key": f"k{i}", "value": i}) for i in range(500)))
        counters = {sample.name: sample.value for sample in module.metrics() if sample.name.startswith("state_sqlite")}
        assert counters["state_sqlite_writes"] == 500
        assert counters["state_sqlite_commits"] <= 50  # group commit: many writes per disk sync
    finally:
        await module.stop()


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from iii.modules.state import StateModule, StateSettings
    from tests.modules.local_host import LocalHost

    async def main() -> None:
        module = StateModule(StateSettings(data_dir=Path(sys.argv[1])))
        host = LocalHost()
        await module.start(host)
        await asyncio.gather(
            *(host.call("state::set", {"scope": "s", "key": f"k{i}", "value": i}) for i in range(200))
        )
        print("answered", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until killed

    asyncio.run(main())
    """
)


async def test_an_answered_sqlite_write_survives_kill_9(tmp_path: Path) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(tmp_path),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line == b"answered\n"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()

    module, host = await started(StateSettings(data_dir=tmp_path))
    try:
        assert await host.call("state::list", {"scope": "s"}) == sorted(range(200), key=lambda i: f"k{i}")
    finally:
        await module.stop()


async def test_a_file_sqlite_cannot_open_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.sqlite3").mkdir()  # a directory where the database file should be
    with pytest.raises(StoreError, match=r"cannot open .*state\.sqlite3"):
        await StateModule(StateSettings(data_dir=tmp_path)).start(LocalHost())
