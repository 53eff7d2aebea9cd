"""What the console's Streams view shows: the streams with their groups and sizes, and one group's items.

The page asks (over ``/console/query``, :class:`~iii.modules.api.ConsoleQueries`) with ``{}`` or with
``{"stream_name", "group_id"}`` for the group it shows, and gets::

    {"streams": [{"id", "groups": [{"id", "items": <count>}]}], "groups_shown", "groups_total",
     "group": null | {"stream_name", "group_id", "total",
                      "items": [{"id", "value": <the item's JSON text>, "truncated": bool}]}}

Everything is bounded by the settings whatever the store holds: at most ``console_max_groups`` groups (in
stream, then group order), at most ``console_max_items`` items of the group (the first by id; ``total`` says how
many it has) and at most ``console_max_value_bytes`` of each item's JSON. ``stream::list`` is not used: it
returns every item, without ids.
"""

from __future__ import annotations

from typing import Any

from iii.modules.streams.settings import StreamsSettings
from iii.modules.streams.store import GroupAddress, StreamStore


def _group_asked(query: Any) -> GroupAddress | None:
    if not isinstance(query, dict):
        raise ValueError("a streams console query is an object")
    stream_name, group_id = query.get("stream_name"), query.get("group_id")
    if stream_name is None and group_id is None:
        return None
    if not isinstance(stream_name, str) or not isinstance(group_id, str):
        raise ValueError("`stream_name` and `group_id` go together, as strings")
    return GroupAddress(stream_name, group_id)


def _preview(value: bytes, limit: int) -> dict[str, Any]:
    truncated = len(value) > limit
    # cut on a character boundary: a partial UTF-8 sequence at the end is dropped
    text = value[:limit].decode("utf-8", "ignore") if truncated else value.decode("utf-8", "replace")
    return {"value": text, "truncated": truncated}


async def console_view(store: StreamStore, settings: StreamsSettings, query: Any) -> dict[str, Any]:
    """The answer to one query of the page (see the module docstring); ``ValueError`` for a malformed one."""
    asked = _group_asked(query)
    counts = await store.group_counts()
    ordered = sorted(counts, key=lambda group: (group.stream_name, group.group_id))
    shown = ordered[: settings.console_max_groups]
    streams: dict[str, list[dict[str, Any]]] = {}
    for group in shown:
        streams.setdefault(group.stream_name, []).append({"id": group.group_id, "items": counts[group]})
    answer: dict[str, Any] = {
        "streams": [{"id": name, "groups": groups} for name, groups in streams.items()],
        "groups_shown": len(shown),
        "groups_total": len(ordered),
        "group": None,
    }
    if asked is not None:
        total, entries = await store.first_items(asked, settings.console_max_items)
        limit = settings.console_max_value_bytes
        answer["group"] = {
            "stream_name": asked.stream_name,
            "group_id": asked.group_id,
            "total": total,
            "items": [{"id": item_id, **_preview(value, limit)} for item_id, value in entries],
        }
    return answer
