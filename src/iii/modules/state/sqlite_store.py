"""The SQLite backend: one file in WAL mode, one writer thread that commits writes in groups.

**Writes.** Every write goes to a single writer thread that owns the only write connection. The thread takes
all the writes waiting (up to ``sqlite_batch_max_writes``), runs them in order in one ``BEGIN IMMEDIATE``
transaction (each change sees the writes before it), commits, and only then answers them: writes that
arrive while a commit is being made to disk wait for the next one, so one disk sync serves many writes
(group commit). ``BEGIN IMMEDIATE`` takes SQLite's write lock before the first read, so a change's read and
write are atomic even against another process using the same file. A change that raises fails alone; an
SQLite error fails the whole group (it is rolled back), and every write of it gets :class:`StoreError`.

**Durability.** ``synchronous=FULL`` (the default) syncs the WAL on every commit: an answered write survives
a process crash and a power loss. ``synchronous=NORMAL`` in WAL mode syncs only at checkpoints: an answered
write still survives the process being killed (the commit is in the operating system's cache), but the last
commits before a power loss or kernel crash may be lost; it is for disks where a sync is expensive and a
machine crash is acceptable. The group commit is what makes FULL affordable.

**Reads** never wait for the writer (WAL readers see the last commit): ``get`` runs on the event loop (a
primary-key lookup takes microseconds, less than a hand-over to a thread), ``list`` and the counts, which
can be long, run on a reader thread with its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from iii.modules.state.store import Applied, Change, Entry, R, StoreError, VersionConflict

FILE_NAME: Final = "state.sqlite3"
_BUSY_TIMEOUT_MS: Final = 10_000
"""How long a connection waits for another process' lock on the file before failing."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS state (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID
"""
_SELECT: Final = "SELECT value, version FROM state WHERE scope = ? AND key = ?"
_UPSERT: Final = (
    "INSERT INTO state (scope, key, value, version) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, version = excluded.version"
)
_DELETE: Final = "DELETE FROM state WHERE scope = ? AND key = ?"


@dataclass(slots=True)
class _Write:
    scope: str
    key: str
    change: Change[Any]
    future: asyncio.Future[Applied[Any]]


_STOP: Final = object()


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE / COMMIT), reads are autocommit.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
    return connection


class SqliteStore:
    """See the module docstring. Open with :meth:`open`; all methods run on the event loop that opened it."""

    kind = "sqlite"

    def __init__(self, path: Path, synchronous: str, batch_max_writes: int) -> None:
        self.path = path
        self._synchronous = synchronous
        self._batch_max_writes = batch_max_writes
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._writer_done: asyncio.Future[None] = self._loop.create_future()
        self._closed = False
        self.commits = 0
        """Transactions committed."""
        self.writes = 0
        """Writes committed (``writes / commits`` is the mean group size)."""
        self._reader_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iii-state-read")
        self._get_connection: sqlite3.Connection | None = None
        self._reader_connection: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, data_dir: Path, *, synchronous: str = "full", batch_max_writes: int = 1024) -> SqliteStore:
        """Create or open ``data_dir / state.sqlite3`` and start the writer thread."""
        store = cls(data_dir / FILE_NAME, synchronous, batch_max_writes)
        await store._start()
        return store

    async def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = self._loop.create_future()
        thread = threading.Thread(target=self._writer, args=(ready,), name="iii-state-writer", daemon=True)
        thread.start()
        try:
            await ready  # the schema exists (or the error that prevented it is raised here)
            self._get_connection = _connect(self.path, self._synchronous)
            self._reader_connection = _connect(self.path, self._synchronous)
        except sqlite3.Error as error:
            await self.close()
            raise StoreError(f"cannot open {self.path}: {error}") from error

    # --- writes ------------------------------------------------------------------------------------

    async def mutate(self, scope: str, key: str, change: Change[R]) -> Applied[R]:
        if self._closed:
            raise StoreError("the state store is closed")
        future: asyncio.Future[Applied[R]] = self._loop.create_future()
        self._queue.put(_Write(scope, key, change, future))
        # A caller cancelled while waiting does not cancel the write: it is carried out and committed.
        return await future

    async def put(self, scope: str, key: str, value: bytes, expected_version: int | None = None) -> Applied[None]:
        def change(current: Entry | None) -> tuple[bytes, None]:
            actual = current.version if current is not None else 0
            if expected_version is not None and actual != expected_version:
                raise VersionConflict(actual)
            return value, None

        return await self.mutate(scope, key, change)

    def _writer(self, ready: asyncio.Future[None]) -> None:
        """The writer thread: open, then commit the waiting writes group by group until told to stop."""
        try:
            connection = _connect(self.path, self._synchronous)
            connection.execute(_SCHEMA)
        except Exception as error:
            self._loop.call_soon_threadsafe(_settle_ready, ready, error)
            self._loop.call_soon_threadsafe(_settle_ready, self._writer_done, None)
            return
        self._loop.call_soon_threadsafe(_settle_ready, ready, None)
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                batch: list[_Write] = []
                if first is _STOP:
                    stopping = True
                else:
                    assert isinstance(first, _Write)
                    batch.append(first)
                while len(batch) < self._batch_max_writes:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True  # finish what came before the stop, then end
                        continue
                    assert isinstance(item, _Write)
                    batch.append(item)
                if batch:
                    self._commit(connection, batch)
        finally:
            connection.close()
            self._closed = True  # if the thread died of a bug, later writes fail instead of waiting forever
            orphans: list[tuple[asyncio.Future[Any], Any]] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if isinstance(item, _Write):
                        orphans.append((item.future, StoreError("the state store's writer has stopped")))
            self._loop.call_soon_threadsafe(_settle_all, orphans)
            self._loop.call_soon_threadsafe(_settle_ready, self._writer_done, None)

    def _commit(self, connection: sqlite3.Connection, batch: list[_Write]) -> None:
        results: list[tuple[asyncio.Future[Any], Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for write in batch:
                    results.append((write.future, self._apply(connection, write)))
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            failure = StoreError(f"SQLite failed: {error}")
            results = [(write.future, failure) for write in batch]
        else:
            self.commits += 1
            self.writes += len(batch)
        self._loop.call_soon_threadsafe(_settle_all, results)

    @staticmethod
    def _apply(connection: sqlite3.Connection, write: _Write) -> Applied[Any] | Exception:
        row = connection.execute(_SELECT, (write.scope, write.key)).fetchone()
        old = Entry(row[0], row[1]) if row is not None else None
        try:
            encoded, outcome = write.change(old)
        except Exception as error:  # the change refused (a version mismatch, a value too large): this write only
            return error
        if encoded is None:
            if old is not None:
                connection.execute(_DELETE, (write.scope, write.key))
            return Applied(old, 0, outcome)
        version = old.version + 1 if old is not None else 1
        connection.execute(_UPSERT, (write.scope, write.key, encoded, version))
        return Applied(old, version, outcome)

    # --- reads -------------------------------------------------------------------------------------

    async def get(self, scope: str, key: str) -> Entry | None:
        connection = self._connection(self._get_connection)
        try:
            row = connection.execute(_SELECT, (scope, key)).fetchone()
        except sqlite3.Error as error:
            raise StoreError(f"SQLite failed: {error}") from error
        return Entry(row[0], row[1]) if row is not None else None

    async def values(self, scope: str) -> list[bytes]:
        rows = await self._read("SELECT value FROM state WHERE scope = ? ORDER BY key", (scope,))
        return [row[0] for row in rows]

    async def scopes(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT scope FROM state ORDER BY scope", ())
        return [row[0] for row in rows]

    async def scope_counts(self) -> dict[str, int]:
        rows = await self._read("SELECT scope, COUNT(*) FROM state GROUP BY scope", ())
        return {row[0]: row[1] for row in rows}

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        connection = self._connection(self._reader_connection)

        def run() -> list[Any]:
            return connection.execute(sql, parameters).fetchall()

        try:
            return await self._loop.run_in_executor(self._reader_executor, run)
        except sqlite3.Error as error:
            raise StoreError(f"SQLite failed: {error}") from error

    def _connection(self, connection: sqlite3.Connection | None) -> sqlite3.Connection:
        if self._closed or connection is None:
            raise StoreError("the state store is closed")
        return connection

    # --- the rest ----------------------------------------------------------------------------------

    def counters(self) -> Mapping[str, int]:
        return {"commits": self.commits, "writes": self.writes}

    def describe(self) -> str:
        return str(self.path)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await self._writer_done  # every write submitted before close is committed and answered
        self._reader_executor.shutdown(wait=True)
        for connection in (self._get_connection, self._reader_connection):
            if connection is not None:
                connection.close()
        self._get_connection = self._reader_connection = None


def _settle_ready(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _settle_all(results: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, result in results:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
