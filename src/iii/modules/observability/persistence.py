"""Keeping the stores' records in the data directory (``[observability] persist = true``), so that they survive
a restart of the engine: ``<data_dir>/observability.sqlite3``, written behind, read back at start.

**Writes.** Each batch the module keeps (:meth:`PersistedRecords.on_records`, on the engine's loop) is only
appended to a list; every :data:`FLUSH_DELAY_S` what gathered is handed to the file's writer thread
(:class:`~iii.modules.sqlite_writer.GroupCommitFile`) as one write, which encodes the records (JSON, as the rings
hold them) in rows of at most :data:`ROW_MAX_RECORDS` and commits them in one transaction (``synchronous=NORMAL``:
a commit survives the engine being killed, the last ones may not survive a power loss). Nothing on the loop waits
for the disk. While :data:`MAX_WRITES_BEHIND` writes are still waiting for the writer, a new one is dropped and
counted (``iii_observability_persist_dropped_total``): the disk cannot keep up, the memory stays bounded.

**Bounds.** The file holds each signal's records like its ring: after each write the oldest rows go while the
rows after them still hold the ring's count (``<signal>_max_count``) or bytes (``<signal>_max_bytes``) bound, so
the file keeps at least what the ring keeps and at most one row more.

**Start.** :meth:`PersistedRecords.load` reads every row back, oldest first, for the module to put in its rings
(which apply their bounds again, should they have shrunk). A row that does not decode is skipped (logged).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from iii.modules.api import MetricSample
from iii.modules.sqlite_writer import GroupCommitFile

log = logging.getLogger("iii.modules.observability")

FILE_NAME: Final = "observability.sqlite3"
FLUSH_DELAY_S: Final = 0.5
"""How long kept records gather before they are handed to the writer together."""
ROW_MAX_RECORDS: Final = 500
"""Records per row (the unit the bounds trim by)."""
MAX_WRITES_BEHIND: Final = 8
"""Writes handed to the writer and not yet committed beyond which new ones are dropped (counted)."""
SIGNALS: Final = ("logs", "spans", "metrics")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    signal TEXT NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_signal ON records (signal, id);
"""
"""One row: up to :data:`ROW_MAX_RECORDS` records of one signal, a JSON array of ``count`` records in
``bytes`` bytes."""


class PersistenceError(RuntimeError):
    """The file cannot be opened or written."""


class PersistedRecords:
    """A :class:`~.module.RecordListener` that keeps what it is told in the data directory (see the module
    docstring). Open with :meth:`open`, read back with :meth:`load`, end with :meth:`close`."""

    def __init__(self, file: GroupCommitFile, bounds: Mapping[str, tuple[int, int]]) -> None:
        self._file = file
        self._bounds = dict(bounds)
        self._pending: dict[str, list[dict[str, Any]]] = {signal: [] for signal in SIGNALS}
        self._flush: asyncio.TimerHandle | None = None
        self._behind = 0
        """Writes handed to the writer, not yet committed."""
        self._totals: dict[str, list[int]] = {signal: [0, 0] for signal in SIGNALS}
        """Records and bytes of each signal's rows in the file (the writer thread's, once loaded)."""
        self.written: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        """Records written since the start (by the writer thread; committed once no write is behind)."""
        self.dropped: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        """Records not written: the writer was too far behind, or a write failed."""
        self._encoder = msgspec.json.Encoder()

    @classmethod
    async def open(cls, data_dir: Path, bounds: Mapping[str, tuple[int, int]]) -> PersistedRecords:
        """Create or open ``data_dir / observability.sqlite3``; ``bounds``: each signal's (count, bytes)."""
        file = await GroupCommitFile.open(
            data_dir / FILE_NAME,
            synchronous="normal",
            batch_max_writes=MAX_WRITES_BEHIND,
            schema=SCHEMA,
            error_type=PersistenceError,
            name="observability",
        )
        return cls(file, bounds)

    async def load(self) -> dict[str, list[dict[str, Any]]]:
        """Every record in the file by signal, oldest first (call once, before any is kept)."""
        rows = await self._file.read(
            lambda connection: connection.execute(
                "SELECT signal, count, bytes, body FROM records ORDER BY id"
            ).fetchall()
        )
        found: dict[str, list[dict[str, Any]]] = {signal: [] for signal in SIGNALS}
        decoder = msgspec.json.Decoder(list[dict[str, Any]])
        for signal, count, size, body in rows:
            if signal not in found:
                continue
            self._totals[signal][0] += count
            self._totals[signal][1] += size
            try:
                found[signal].extend(decoder.decode(body))
            except msgspec.DecodeError as exc:
                log.warning("skipped a row of %s records in %s that does not decode: %s", signal, FILE_NAME, exc)
        return found

    # --- on the engine's loop ---------------------------------------------------------------------------------

    def on_records(self, signal: str, records: list[dict[str, Any]], raw: bytes | None) -> None:
        """Have ``records`` written with the next flush (a :class:`~.module.RecordListener`)."""
        pending = self._pending.get(signal)
        if pending is None or not records:
            return
        pending.extend(records)
        if len(pending) > self._bounds[signal][0]:  # only the newest of these could stay in the file anyway
            del pending[: len(pending) - self._bounds[signal][0]]
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_DELAY_S, self._hand_over)

    def clear(self, signal: str) -> None:
        """Forget every record of ``signal``, in the file too (``engine::logs::clear``, ...)."""
        self._pending[signal] = []
        self._submit(lambda connection: self._delete_all(connection, signal), {})

    def _hand_over(self) -> None:
        self._flush = None
        batches = {signal: records for signal, records in self._pending.items() if records}
        if not batches:
            return
        self._pending = {signal: [] for signal in SIGNALS}
        self._submit(lambda connection: self._write(connection, batches), batches)

    def _submit(self, write: Callable[[sqlite3.Connection], None], batches: Mapping[str, list[dict[str, Any]]]) -> None:
        if self._behind >= MAX_WRITES_BEHIND and batches:
            for signal, records in batches.items():
                self.dropped[signal] += len(records)
            return
        try:
            future = self._file.submit(write)
        except PersistenceError:  # closed
            return
        self._behind += 1
        future.add_done_callback(lambda done: self._written(done, batches))

    def _written(self, done: asyncio.Future[Any], batches: Mapping[str, list[dict[str, Any]]]) -> None:
        self._behind -= 1
        if done.cancelled() or done.exception() is None:
            return
        for signal, records in batches.items():
            self.dropped[signal] += len(records)
        log.warning("could not write telemetry records to %s: %s", FILE_NAME, done.exception())
        self._submit(self._recount, {})  # the failed write's rows were rolled back: count what is there

    def _recount(self, connection: sqlite3.Connection) -> None:
        totals = {signal: [0, 0] for signal in SIGNALS}
        query = "SELECT signal, SUM(count), SUM(bytes) FROM records GROUP BY signal"
        for signal, count, size in connection.execute(query):
            if signal in totals:
                totals[signal] = [count, size]
        self._totals = totals

    async def close(self) -> None:
        """Write what is pending, then close the file."""
        if self._flush is not None:
            self._flush.cancel()
        self._hand_over()
        await self._file.close()

    # --- on the writer thread ---------------------------------------------------------------------------------

    def _write(self, connection: sqlite3.Connection, batches: Mapping[str, list[dict[str, Any]]]) -> None:
        for signal, records in batches.items():
            totals = self._totals[signal]
            for start in range(0, len(records), ROW_MAX_RECORDS):
                chunk = records[start : start + ROW_MAX_RECORDS]
                body = self._encoder.encode(chunk)
                connection.execute(
                    "INSERT INTO records (signal, count, bytes, body) VALUES (?, ?, ?, ?)",
                    (signal, len(chunk), len(body), body),
                )
                totals[0] += len(chunk)
                totals[1] += len(body)
            self.written[signal] += len(records)
            self._trim(connection, signal)

    def _trim(self, connection: sqlite3.Connection, signal: str) -> None:
        """Delete the oldest rows of ``signal`` that the rows after them make unneeded (see the bounds)."""
        max_count, max_bytes = self._bounds[signal]
        totals = self._totals[signal]
        oldest = connection.execute("SELECT id, count, bytes FROM records WHERE signal = ? ORDER BY id", (signal,))
        doomed = []
        for row_id, count, size in oldest:
            if totals[0] - count < max_count and totals[1] - size < max_bytes:
                break
            doomed.append((row_id,))
            totals[0] -= count
            totals[1] -= size
        oldest.close()
        connection.executemany("DELETE FROM records WHERE id = ?", doomed)

    def _delete_all(self, connection: sqlite3.Connection, signal: str) -> None:
        connection.execute("DELETE FROM records WHERE signal = ?", (signal,))
        self._totals[signal] = [0, 0]

    # --- metrics ---------------------------------------------------------------------------------------------

    def metrics(self) -> Iterator[MetricSample]:
        for signal in SIGNALS:
            labels = {"signal": signal}
            yield MetricSample(
                "observability_persisted_records", self._totals[signal][0], labels, "Telemetry records in the data dir"
            )
            yield MetricSample(
                "observability_persist_dropped_total",
                self.dropped[signal],
                labels,
                "Telemetry records not written to the data dir (the disk too far behind, or a write failed)",
                "counter",
            )
