"""One SQLite file in WAL mode written by one thread that commits writes in groups (the modules' embedded stores).

**Writes.** Every write is a function of the write connection, handed to a single writer thread that owns that
connection. The thread takes all the writes waiting (up to ``batch_max_writes``), runs them in order in one
``BEGIN IMMEDIATE`` transaction (each sees the writes before it), commits, and only then answers them: writes
that arrive while a commit is being made to disk wait for the next one, so one disk sync serves many writes
(group commit). ``BEGIN IMMEDIATE`` takes SQLite's write lock before the first read, so a write's reads and
changes are atomic even against another process using the same file. A write that raises anything but an
SQLite error fails alone (its own changes may stay: a write checks before it changes); an SQLite error fails
the whole group (it is rolled back), and every write of it gets ``error_type``.

**Durability.** ``synchronous=FULL`` syncs the WAL on every commit: an answered write survives a process crash
and a power loss. ``synchronous=NORMAL`` in WAL mode syncs only at checkpoints: an answered write still
survives the process being killed (the commit is in the operating system's cache), but the last commits before
a power loss or kernel crash may be lost. The group commit is what makes FULL affordable.

**Early writes** (``write(..., early=True)``) are answered as soon as they have run, before their group is
committed, and even if the commit then fails: for changes whose durability nobody waits for (the queue's
leases, which a restart clears anyway). A write that raises is answered with its group, as any other.

**Reads** never wait for the writer (WAL readers see the last commit): :meth:`GroupCommitFile.read` runs on a
reader thread with its own connection, and :meth:`GroupCommitFile.connection` gives a connection for reads
short enough to run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_MS: Final = 10_000
"""How long a connection waits for another process' lock on the file before failing."""

Write = Callable[[sqlite3.Connection], Any]
"""A write: runs on the writer thread inside the group's transaction; its return value answers it."""


@dataclass(slots=True)
class _Pending:
    write: Write
    future: asyncio.Future[Any]
    early: bool = False


_STOP: Final = object()


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with explicit transactions (``BEGIN`` / ``COMMIT``)."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
    return connection


class GroupCommitFile:
    """See the module docstring. Open with :meth:`open`; the async methods run on the loop that opened it."""

    def __init__(
        self, path: Path, synchronous: str, batch_max_writes: int, schema: str, error_type: type[Exception], name: str
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._batch_max_writes = batch_max_writes
        self._schema = schema
        self._error_type = error_type
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._writer_done: asyncio.Future[None] = self._loop.create_future()
        self.closed = False
        self.commits = 0
        """Transactions committed."""
        self.writes = 0
        """Writes committed (``writes / commits`` is the mean group size)."""
        self._reader_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"iii-{name}-read")
        self._loop_connection: sqlite3.Connection | None = None
        self._reader_connection: sqlite3.Connection | None = None

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        synchronous: str,
        batch_max_writes: int,
        schema: str,
        error_type: type[Exception],
        name: str,
    ) -> GroupCommitFile:
        """Create or open ``path`` (and its directory), run ``schema`` (a script), start the writer thread.
        ``error_type(message)`` is raised for SQLite failures; ``name`` names the threads and the messages."""
        file = cls(path, synchronous, batch_max_writes, schema, error_type, name)
        await file._start()
        return file

    async def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = self._loop.create_future()
        thread = threading.Thread(target=self._writer, args=(ready,), name=f"iii-{self._name}-writer", daemon=True)
        thread.start()
        try:
            await ready  # the schema exists (or the error that prevented it is raised here)
            self._loop_connection = connect(self.path, self._synchronous)
            self._reader_connection = connect(self.path, self._synchronous)
        except sqlite3.Error as error:
            await self.close()
            raise self._error_type(f"cannot open {self.path}: {error}") from error

    async def write(self, write: Callable[[sqlite3.Connection], T], *, early: bool = False) -> T:
        """Run ``write`` in the next group's transaction; returns (or raises) what it did once committed. A caller
        cancelled while waiting does not cancel the write: it is carried out and committed.

        ``early``: answered as soon as it has run, before its group is committed (and even if the commit then
        fails and is rolled back), for a write whose effect need not be on disk when its caller goes on (the
        queue's leases, which a restart clears anyway). A write it raises is answered with the group, as usual.
        """
        return await self.submit(write, early=early)

    def submit(self, write: Callable[[sqlite3.Connection], T], *, early: bool = False) -> asyncio.Future[T]:
        """:meth:`write` without waiting: the write is handed to the writer now, and the future it returns is
        answered as :meth:`write` says (for a caller that hands over several writes before it waits)."""
        if self.closed:
            raise self._error_type(f"the {self._name} store is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Pending(write, future, early))
        return future

    async def read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``read`` on the reader thread (for reads that can take long: listings, counts)."""
        connection = self._open(self._reader_connection)
        try:
            return await self._loop.run_in_executor(self._reader_executor, read, connection)
        except sqlite3.Error as error:
            raise self._error_type(f"SQLite failed: {error}") from error

    def connection(self) -> sqlite3.Connection:
        """The event loop's read connection (for primary-key lookups, quicker than a hand-over to a thread)."""
        return self._open(self._loop_connection)

    def _open(self, connection: sqlite3.Connection | None) -> sqlite3.Connection:
        if self.closed or connection is None:
            raise self._error_type(f"the {self._name} store is closed")
        return connection

    def _writer(self, ready: asyncio.Future[None]) -> None:
        """The writer thread: open, then commit the waiting writes group by group until told to stop."""
        try:
            connection = connect(self.path, self._synchronous)
            connection.executescript(self._schema)
        except Exception as error:
            self._loop.call_soon_threadsafe(_settle_ready, ready, error)
            self._loop.call_soon_threadsafe(_settle_ready, self._writer_done, None)
            return
        self._loop.call_soon_threadsafe(_settle_ready, ready, None)
        stopping = False
        try:
            while not stopping:
                first = self._queue.get()
                batch: list[_Pending] = []
                if first is _STOP:
                    stopping = True
                else:
                    assert isinstance(first, _Pending)
                    batch.append(first)
                while len(batch) < self._batch_max_writes:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True  # finish what came before the stop, then end
                        continue
                    assert isinstance(item, _Pending)
                    batch.append(item)
                if batch:
                    self._commit(connection, batch)
        finally:
            connection.close()
            self.closed = True  # if the thread died of a bug, later writes fail instead of waiting forever
            orphans: list[tuple[asyncio.Future[Any], Any]] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    item = self._queue.get_nowait()
                    if isinstance(item, _Pending):
                        orphans.append((item.future, self._error_type(f"the {self._name} store's writer has stopped")))
            self._loop.call_soon_threadsafe(_settle_all, orphans)
            self._loop.call_soon_threadsafe(_settle_ready, self._writer_done, None)

    def _commit(self, connection: sqlite3.Connection, batch: list[_Pending]) -> None:
        results: list[tuple[asyncio.Future[Any], Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for pending in batch:
                    try:
                        outcome = pending.write(connection)
                    except sqlite3.Error:
                        raise
                    except Exception as error:  # the write refused (a version mismatch, ...): this write only
                        outcome = error
                    if pending.early and not isinstance(outcome, Exception):  # its caller goes on now
                        self._loop.call_soon_threadsafe(_settle_all, [(pending.future, outcome)])
                    else:
                        results.append((pending.future, outcome))
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            failure = self._error_type(f"SQLite failed: {error}")
            results = [(pending.future, failure) for pending in batch]
        else:
            self.commits += 1
            self.writes += len(batch)
        self._loop.call_soon_threadsafe(_settle_all, results)

    async def close(self) -> None:
        """Commit and answer every write submitted before, then close the connections (idempotent)."""
        if self.closed and self._writer_done.done():
            self._close_readers()
            return
        self.closed = True
        self._queue.put(_STOP)
        await self._writer_done
        self._close_readers()

    def _close_readers(self) -> None:
        self._reader_executor.shutdown(wait=True)
        for connection in (self._loop_connection, self._reader_connection):
            if connection is not None:
                connection.close()
        self._loop_connection = self._reader_connection = None


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
