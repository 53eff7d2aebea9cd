"""The subscription table: which connection subscribed to what, and which connections a message goes to (pure).

A subscription is a client's ``join`` (:class:`~iii.modules.streams.messages.Target`): a group, or one item of
it, under the id the client gave it. A message of ``(stream, group, id)`` goes to each connection with at least
one subscription to that group that has no item id or has that id; **once per connection**, however many of
its subscriptions match (its client routes messages by stream, group and id itself, so a second copy would
apply a change twice).

Lookups cost one dictionary access per message plus one check per connection subscribed to the group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from iii.modules.streams.messages import Target

C = TypeVar("C", bound=Hashable)
"""A connection (anything hashable: the table does no I/O)."""


@dataclass(slots=True)
class _Interest:
    """One connection's subscriptions to one group: how many are to the whole group, and how many to each item."""

    whole_group: int = 0
    items: Counter[str] = field(default_factory=Counter)

    def wants(self, item_id: str | None) -> bool:
        return self.whole_group > 0 or (item_id is not None and self.items[item_id] > 0)

    def add(self, item_id: str | None, delta: int) -> None:
        if item_id is None:
            self.whole_group += delta
        else:
            self.items[item_id] += delta
            if self.items[item_id] <= 0:
                del self.items[item_id]

    @property
    def empty(self) -> bool:
        return self.whole_group <= 0 and not self.items


class SubscriptionTable(Generic[C]):
    """The subscriptions of every connection (see the module docstring)."""

    def __init__(self) -> None:
        self._by_connection: dict[C, dict[str, Target]] = {}
        self._by_group: dict[tuple[str, str], dict[C, _Interest]] = {}
        self.count = 0
        """Subscriptions in the table."""

    def add(self, connection: C, target: Target) -> Target | None:
        """Subscribe ``connection`` to ``target``; returns the subscription of the same id it replaced, if any."""
        replaced = self.remove(connection, target.subscription_id)
        self._by_connection.setdefault(connection, {})[target.subscription_id] = target
        interests = self._by_group.setdefault((target.stream_name, target.group_id), {})
        interest = interests.get(connection)
        if interest is None:
            interest = interests[connection] = _Interest()
        interest.add(target.item_id, 1)
        self.count += 1
        return replaced

    def remove(self, connection: C, subscription_id: str) -> Target | None:
        """End one subscription; returns it (None if the connection had none of that id)."""
        subscriptions = self._by_connection.get(connection)
        if subscriptions is None:
            return None
        target = subscriptions.pop(subscription_id, None)
        if target is None:
            return None
        if not subscriptions:
            del self._by_connection[connection]
        key = (target.stream_name, target.group_id)
        interests = self._by_group[key]
        interest = interests[connection]
        interest.add(target.item_id, -1)
        if interest.empty:
            del interests[connection]
            if not interests:
                del self._by_group[key]
        self.count -= 1
        return target

    def remove_connection(self, connection: C) -> list[Target]:
        """End every subscription of ``connection``; returns them, in the order they were made."""
        targets = list(self._by_connection.get(connection, {}).values())
        for target in targets:
            self.remove(connection, target.subscription_id)
        return targets

    def subscriptions(self, connection: C) -> list[Target]:
        """The subscriptions ``connection`` has, in the order they were made."""
        return list(self._by_connection.get(connection, {}).values())

    def recipients(self, stream_name: str, group_id: str, item_id: str | None) -> list[C]:
        """The connections a message of ``(stream_name, group_id, item_id)`` goes to, each once."""
        interests = self._by_group.get((stream_name, group_id))
        if not interests:
            return []
        return [connection for connection, interest in interests.items() if interest.wants(item_id)]
