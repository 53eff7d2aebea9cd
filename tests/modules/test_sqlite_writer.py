"""The modules' SQLite writer (iii.modules.sqlite_writer): what a write's answer means."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from iii.modules.sqlite_writer import GroupCommitFile


class WriterError(Exception):
    pass


WriteFunction = Callable[[sqlite3.Connection], object]


@pytest.fixture
async def file(tmp_path: Path) -> AsyncIterator[GroupCommitFile]:
    opened = await GroupCommitFile.open(
        tmp_path / "f.sqlite3",
        synchronous="full",
        batch_max_writes=64,
        schema="CREATE TABLE t (v INTEGER);",
        error_type=WriterError,
        name="test",
    )
    yield opened
    await opened.close()


def insert(value: int) -> WriteFunction:
    def write(connection: sqlite3.Connection) -> int:
        connection.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return write


async def one_group(file: GroupCommitFile, *writes: tuple[WriteFunction, bool]) -> list[asyncio.Future[object]]:
    """Hand ``writes`` ((write, early) pairs) to the writer while it is held, so that they form one group."""
    entered, hold = threading.Event(), threading.Event()

    def held_write(connection: sqlite3.Connection) -> None:
        entered.set()
        hold.wait(10)

    held = file.submit(held_write)
    assert await asyncio.to_thread(entered.wait, 10)  # the writer is inside the held write's group
    futures = [file.submit(write, early=early) for write, early in writes]
    hold.set()
    await held
    return futures


def values(file: GroupCommitFile) -> list[int]:
    return [row[0] for row in file.connection().execute("SELECT v FROM t ORDER BY v")]


async def test_a_write_is_answered_once_committed_and_a_failed_group_fails_every_write(file: GroupCommitFile) -> None:
    def fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO missing VALUES (1)")

    first, second = await one_group(file, (insert(1), False), (fail, False))
    with pytest.raises(WriterError):
        await first
    with pytest.raises(WriterError):
        await second
    assert values(file) == []  # rolled back
    assert await file.write(insert(2)) == 2
    assert values(file) == [2]


async def test_an_early_write_is_answered_before_its_group_commits_even_if_the_commit_fails(
    file: GroupCommitFile,
) -> None:
    def fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO missing VALUES (1)")

    early, failing = await one_group(file, (insert(1), True), (fail, False))
    assert await early == 1  # answered when it ran: it promised nothing about the disk
    with pytest.raises(WriterError):
        await failing
    assert values(file) == []  # its change went with the group's rollback


async def test_an_early_write_that_raises_is_answered_with_the_group(file: GroupCommitFile) -> None:
    def refuse(connection: sqlite3.Connection) -> None:
        raise ValueError("refused")

    refused, kept = await one_group(file, (refuse, True), (insert(3), False))
    with pytest.raises(ValueError, match="refused"):
        await refused
    assert await kept == 3
    assert values(file) == [3]
