"""The SQLite backend: one file in WAL mode, one writer thread that commits writes in groups.

**Writes** go to :class:`~iii.modules.sqlite_writer.GroupCommitFile`'s writer thread (see there for the group
commit and for what ``synchronous`` FULL and NORMAL keep): a change reads the key's entry and writes the new
one in the group's transaction. A change that raises fails alone; an SQLite error fails the whole group, and
every write of it gets :class:`StoreError`.

**Reads** never wait for the writer (WAL readers see the last commit): ``get`` runs on the event loop (a
primary-key lookup takes microseconds, less than a hand-over to a thread), ``list`` and the counts, which
can be long, run on the reader thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from iii.modules.sqlite_writer import GroupCommitFile
from iii.modules.state.store import Applied, Change, Entry, R, StoreError, VersionConflict

FILE_NAME: Final = "state.sqlite3"

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


class SqliteStore:
    """See the module docstring. Open with :meth:`open`; all methods run on the event loop that opened it."""

    kind = "sqlite"

    def __init__(self, file: GroupCommitFile) -> None:
        self._file = file
        self.path = file.path

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        synchronous: str = "full",
        batch_max_writes: int = 1024,
        file_name: str = FILE_NAME,
        name: str = "state",
    ) -> SqliteStore:
        """Create or open ``data_dir / file_name`` (``state.sqlite3``) and start the writer thread (``name`` names
        it in logs; the streams module keeps its items in a file of its own through this same store)."""
        file = await GroupCommitFile.open(
            data_dir / file_name,
            synchronous=synchronous,
            batch_max_writes=batch_max_writes,
            schema=_SCHEMA,
            error_type=StoreError,
            name=name,
        )
        return cls(file)

    @property
    def commits(self) -> int:
        """Transactions committed."""
        return self._file.commits

    @property
    def writes(self) -> int:
        """Writes committed (``writes / commits`` is the mean group size)."""
        return self._file.writes

    # --- writes ------------------------------------------------------------------------------------

    async def mutate(self, scope: str, key: str, change: Change[R]) -> Applied[R]:
        def write(connection: sqlite3.Connection) -> Applied[R]:
            return _apply(connection, scope, key, change)

        return await self._file.write(write)

    async def put(self, scope: str, key: str, value: bytes, expected_version: int | None = None) -> Applied[None]:
        def change(current: Entry | None) -> tuple[bytes, None]:
            actual = current.version if current is not None else 0
            if expected_version is not None and actual != expected_version:
                raise VersionConflict(actual)
            return value, None

        return await self.mutate(scope, key, change)

    # --- reads -------------------------------------------------------------------------------------

    async def get(self, scope: str, key: str) -> Entry | None:
        connection = self._file.connection()
        try:
            row = connection.execute(_SELECT, (scope, key)).fetchone()
        except sqlite3.Error as error:
            raise StoreError(f"SQLite failed: {error}") from error
        return Entry(row[0], row[1]) if row is not None else None

    async def values(self, scope: str) -> list[bytes]:
        rows = await self._read("SELECT value FROM state WHERE scope = ? ORDER BY key", (scope,))
        return [row[0] for row in rows]

    async def first_entries(self, scope: str, limit: int) -> tuple[int, list[tuple[str, bytes]]]:
        def run(connection: sqlite3.Connection) -> tuple[int, list[tuple[str, bytes]]]:
            (total,) = connection.execute("SELECT COUNT(*) FROM state WHERE scope = ?", (scope,)).fetchone()
            rows = connection.execute(
                "SELECT key, value FROM state WHERE scope = ? ORDER BY key LIMIT ?", (scope, limit)
            ).fetchall()
            return total, [(row[0], row[1]) for row in rows]

        return await self._file.read(run)

    async def scopes(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT scope FROM state ORDER BY scope", ())
        return [row[0] for row in rows]

    async def scope_counts(self) -> dict[str, int]:
        rows = await self._read("SELECT scope, COUNT(*) FROM state GROUP BY scope", ())
        return {row[0]: row[1] for row in rows}

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        def run(connection: sqlite3.Connection) -> list[Any]:
            return connection.execute(sql, parameters).fetchall()

        return await self._file.read(run)

    # --- the rest ----------------------------------------------------------------------------------

    def counters(self) -> Mapping[str, int]:
        return {"commits": self.commits, "writes": self.writes}

    def describe(self) -> str:
        return str(self.path)

    async def close(self) -> None:
        await self._file.close()  # every write submitted before close is committed and answered


def _apply(connection: sqlite3.Connection, scope: str, key: str, change: Change[R]) -> Applied[R]:
    """Read the entry, let ``change`` decide (it may refuse by raising: nothing is written then), write it."""
    row = connection.execute(_SELECT, (scope, key)).fetchone()
    old = Entry(row[0], row[1]) if row is not None else None
    encoded, outcome = change(old)
    if encoded is None:
        if old is not None:
            connection.execute(_DELETE, (scope, key))
        return Applied(old, 0, outcome)
    version = old.version + 1 if old is not None else 1
    connection.execute(_UPSERT, (scope, key, encoded, version))
    return Applied(old, version, outcome)
