"""A large stream group made in one SQLite transaction (100,000 ``stream::set`` calls would take minutes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from iii.modules.streams import StreamsSettings
from iii.modules.streams.store import FILE_NAME, open_stream_store


async def fill_stream_group(data_dir: Path, stream_name: str, group_id: str, count: int) -> None:
    """Store items ``i000000``... (values ``{"n": index}``) in the group, in the streams' SQLite file under
    ``data_dir``, before an engine opens it. The group's scope is the JSON array of the two names, as
    ``iii.modules.streams.store`` documents."""
    store = await open_stream_store(StreamsSettings(data_dir=data_dir))  # creates the file and its table
    await store.close()
    scope = msgspec.json.encode([stream_name, group_id]).decode()
    rows = ((scope, f"i{index:06d}", msgspec.json.encode({"n": index}), 1) for index in range(count))
    with sqlite3.connect(data_dir / FILE_NAME) as connection:
        connection.executemany("INSERT INTO state (scope, key, value, version) VALUES (?, ?, ?, ?)", rows)
    connection.close()
