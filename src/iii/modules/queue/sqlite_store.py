"""The SQLite queue backend: one file, ``queue.sqlite3`` in ``--data-dir``, written with group commit.

Every message is one row with its state (ready, leased, dead) and a sequence number given when it was added
(the queue's order). Every change (add, claim, ack, retry, ...) is a write of
:class:`~iii.modules.sqlite_writer.GroupCommitFile`: it is durable when it returns, and the writes waiting
together share one transaction and one disk sync, so throughput does not pay one sync per message. A claim
alone is answered as soon as it has run, before its transaction is on disk: a lease needs no durability
(``recover`` makes every lease ready at start), and a delivery waits one disk sync less. (If that commit
failed, the claimed messages would be ready again while delivered: delivered twice, which at least once
allows.) Listings and counts run on the reader thread; the counts once the claims handed over before them
are committed.

FIFO: a group's head is its oldest message that is ready or leased; only a head that is ready and due is
claimed, so a group advances one message at a time, and a message waiting out a retry's backoff holds back
its own group alone.

A lease is only a mark in the file: :meth:`SqliteQueueStore.recover` (at start) makes every leased message
ready, as only one engine uses the file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from iii.modules.queue.store import NewMessage, QueueCounts, StoredMessage, StoreError
from iii.modules.sqlite_writer import GroupCommitFile

FILE_NAME: Final = "queue.sqlite3"

_READY: Final = 0
_LEASED: Final = 1
_DEAD: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    function_id TEXT NOT NULL,
    data BLOB NOT NULL,
    grp TEXT,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at_ms INTEGER NOT NULL,
    available_at_ms INTEGER NOT NULL,
    lease_until_ms INTEGER,
    dead_at_ms INTEGER,
    traceparent TEXT,
    baggage TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_state ON messages (queue, state, seq);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue, grp, seq) WHERE grp IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_leased ON messages (state, lease_until_ms);
"""
_COLUMNS: Final = (
    "seq, message_id, queue, function_id, data, grp, attempts, enqueued_at_ms, available_at_ms, traceparent, "
    "baggage, last_error"
)
_INSERT: Final = (
    "INSERT OR IGNORE INTO messages (message_id, queue, function_id, data, grp, state, enqueued_at_ms, "
    "available_at_ms, traceparent, baggage) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
)
_CLAIM_STANDARD: Final = (
    f"SELECT {_COLUMNS} FROM messages WHERE queue = ? AND state = 0 AND available_at_ms <= ? ORDER BY seq LIMIT ?"
)
_CLAIM_FIFO: Final = (
    # The first ready message of each group that has none leased (a redriven message waits behind the one being
    # delivered), if it is due (a retried one holds its group back until its retry is due).
    f"SELECT {_COLUMNS} FROM messages WHERE seq IN ("
    "SELECT MIN(seq) FROM messages WHERE queue = ?1 AND state = 0 AND (grp IS NULL OR grp NOT IN ("
    "SELECT grp FROM messages WHERE queue = ?1 AND state = 1 AND grp IS NOT NULL"
    ")) GROUP BY grp"
    ") AND available_at_ms <= ?2 ORDER BY seq LIMIT ?3"
)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _nothing(connection: sqlite3.Connection) -> None:
    """A write that changes nothing: awaited, every write handed over before it is committed."""


def _stored(row: tuple[Any, ...]) -> StoredMessage:
    (_, message_id, queue, function_id, data, group, attempts, enqueued, available, traceparent, baggage, error) = row
    return StoredMessage(
        message_id=message_id,
        queue=queue,
        function_id=function_id,
        data=bytes(data),
        group=group,
        attempts=attempts,
        enqueued_at_ms=enqueued,
        available_at_ms=available,
        traceparent=traceparent,
        baggage=baggage,
        last_error=json.loads(error) if error is not None else None,
    )


class SqliteQueueStore:
    """See the module docstring (a :class:`~iii.modules.queue.store.QueueStore`). Open with :meth:`open`."""

    kind = "sqlite"

    def __init__(self, file: GroupCommitFile) -> None:
        self._file = file
        self.path = file.path

    @classmethod
    async def open(cls, data_dir: Path, *, synchronous: str = "full", batch_max_writes: int = 1024) -> SqliteQueueStore:
        """Create or open ``data_dir / queue.sqlite3`` and start its writer thread (``synchronous``: SQLite's
        ``full`` or ``normal``, see :mod:`iii.modules.sqlite_writer`)."""
        file = await GroupCommitFile.open(
            data_dir / FILE_NAME,
            synchronous=synchronous,
            batch_max_writes=batch_max_writes,
            schema=_SCHEMA,
            error_type=StoreError,
            name="queue",
        )
        return cls(file)

    def counters(self) -> Mapping[str, int]:
        """Transactions committed and writes committed (their ratio is the mean group size)."""
        return {"commits": self._file.commits, "writes": self._file.writes}

    def describe(self) -> str:
        return str(self.path)

    # --- changes -----------------------------------------------------------------------------------

    async def add(self, messages: list[NewMessage]) -> None:
        now = _now_ms()
        rows = [
            (
                m.message_id,
                m.queue,
                m.function_id,
                m.data,
                m.group,
                now,
                m.available_at_ms,
                m.traceparent,
                m.baggage,
            )
            for m in messages
        ]

        def write(connection: sqlite3.Connection) -> None:
            connection.executemany(_INSERT, rows)

        await self._file.write(write)

    async def claim(
        self, queue: str, limit: int, now_ms: int, lease_ms: int, *, fifo: bool = False
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []

        def write(connection: sqlite3.Connection) -> list[StoredMessage]:
            rows = connection.execute(_CLAIM_FIFO if fifo else _CLAIM_STANDARD, (queue, now_ms, limit)).fetchall()
            if rows:
                connection.executemany(
                    "UPDATE messages SET state = 1, lease_until_ms = ? WHERE seq = ?",
                    [(now_ms + lease_ms, row[0]) for row in rows],
                )
            return [_stored(row) for row in rows]

        # Answered before the commit: a lease need not be on disk (``recover`` makes every lease ready at start),
        # and a delivery waits one disk sync less. Listings that count leases wait for it (``queues``).
        return await self._file.write(write, early=True)

    async def ack(self, message_id: str) -> None:
        # Wherever it is: a late result of a delivery whose lease ran out still counts (the protocol's ack).
        await self._change("DELETE FROM messages WHERE message_id = ?", (message_id,))

    async def retry(self, message_id: str, available_at_ms: int, error: dict[str, Any]) -> None:
        await self._change(
            "UPDATE messages SET state = 0, lease_until_ms = NULL, attempts = attempts + 1, available_at_ms = ?, "
            "last_error = ? WHERE message_id = ? AND state = 1",
            (available_at_ms, json.dumps(error), message_id),
        )

    async def release(self, message_id: str) -> None:
        await self._change(
            "UPDATE messages SET state = 0, lease_until_ms = NULL WHERE message_id = ? AND state = 1", (message_id,)
        )

    async def bury(self, message_id: str, error: dict[str, Any]) -> None:
        await self._change(
            "UPDATE messages SET state = 2, lease_until_ms = NULL, attempts = attempts + 1, dead_at_ms = ?, "
            "last_error = ? WHERE message_id = ? AND state = 1",
            (_now_ms(), json.dumps(error), message_id),
        )

    async def recover(self) -> int:
        return await self._change("UPDATE messages SET state = 0, lease_until_ms = NULL WHERE state = 1", ())

    async def reclaim(self, now_ms: int) -> int:
        return await self._change(
            "UPDATE messages SET state = 0, lease_until_ms = NULL WHERE state = 1 AND lease_until_ms <= ?", (now_ms,)
        )

    async def redrive(self, queue: str) -> int:
        return await self._change(
            "UPDATE messages SET state = 0, attempts = 0, available_at_ms = 0, dead_at_ms = NULL "
            "WHERE queue = ? AND state = 2",
            (queue,),
        )

    async def redrive_message(self, queue: str, message_id: str) -> bool:
        changed = await self._change(
            "UPDATE messages SET state = 0, attempts = 0, available_at_ms = 0, dead_at_ms = NULL "
            "WHERE queue = ? AND message_id = ? AND state = 2",
            (queue, message_id),
        )
        return changed > 0

    async def discard(self, queue: str, message_id: str) -> bool:
        changed = await self._change(
            "DELETE FROM messages WHERE queue = ? AND message_id = ? AND state = 2", (queue, message_id)
        )
        return changed > 0

    async def _change(self, sql: str, parameters: tuple[Any, ...]) -> int:
        def write(connection: sqlite3.Connection) -> int:
            return connection.execute(sql, parameters).rowcount

        return await self._file.write(write)

    # --- reads -------------------------------------------------------------------------------------

    async def dead(self, queue: str, limit: int) -> list[StoredMessage]:
        def read(connection: sqlite3.Connection) -> list[StoredMessage]:
            sql = f"SELECT {_COLUMNS} FROM messages WHERE queue = ? AND state = 2 ORDER BY seq LIMIT ?"
            return [_stored(row) for row in connection.execute(sql, (queue, limit)).fetchall()]

        return await self._file.read(read)

    async def queues(self) -> dict[str, QueueCounts]:
        await self._file.write(_nothing)  # claims are answered before their commit: count once they are in

        def read(connection: sqlite3.Connection) -> dict[str, QueueCounts]:
            counts: dict[str, list[int]] = {}
            for queue, state, count in connection.execute(
                "SELECT queue, state, COUNT(*) FROM messages GROUP BY queue, state"
            ):
                counts.setdefault(queue, [0, 0, 0])[state] = count
            return {queue: QueueCounts(*values) for queue, values in sorted(counts.items())}

        return await self._file.read(read)

    async def close(self) -> None:
        await self._file.close()
