"""Which function id is served by whom.

One live owner per function id; the first live owner keeps it (a second worker asking for the same id is
refused), and an id whose owner disconnected is free again. Builtins are entries with a handler and no
owner. This in-process registry is the seam where a shared (multi-engine) registry would plug in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from iii.engine.peers import Host
from iii.protocol.messages import JSON_NULL

BuiltinHandler = Callable[[Any, Any], Any]
"""A builtin: ``handler(caller, data) -> result``; raises :class:`BuiltinInputError` on bad input."""


class BuiltinInputError(ValueError):
    """A builtin was called with input of the wrong shape; answered as ``deserialization_error``."""


class BuiltinLimitError(RuntimeError):
    """A builtin call would take the caller past one of its limits; answered as ``limit_exceeded``."""


class BuiltinFailure(RuntimeError):
    """A builtin call failed with an error ``code`` of its own (``NOT_FOUND`` for an unknown id, say)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FunctionEntry(msgspec.Struct):
    """A registered function: hosted by ``owner``, or a builtin with ``handler``."""

    function_id: str
    owner: Host | None = None
    handler: BuiltinHandler | None = None
    description: str | None = None
    metadata: msgspec.Raw = JSON_NULL
    request_format: msgspec.Raw = JSON_NULL
    response_format: msgspec.Raw = JSON_NULL

    @property
    def is_builtin(self) -> bool:
        return self.handler is not None


class FunctionRegistry:
    """Function ids mapped to their entries, with an index of what each host owns."""

    def __init__(self) -> None:
        self._entries: dict[str, FunctionEntry] = {}
        self._owned: dict[Host, set[str]] = {}
        self.on_change: Callable[[], None] | None = None
        """Called after a worker's function is added or removed (not for builtins or updates of an entry)."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, function_id: str) -> FunctionEntry | None:
        return self._entries.get(function_id)

    def entries(self) -> Iterator[FunctionEntry]:
        return iter(list(self._entries.values()))

    def add_builtin(self, function_id: str, handler: BuiltinHandler, description: str) -> None:
        self._entries[function_id] = FunctionEntry(function_id, handler=handler, description=description)

    def register(self, entry: FunctionEntry) -> FunctionEntry | None:
        """Add or update ``entry`` for its owner.

        Returns ``None`` on success, or the conflicting entry when another host (or a builtin) already
        owns the id; nothing changes then.
        """
        assert entry.owner is not None
        current = self._entries.get(entry.function_id)
        if current is not None and current.owner is not entry.owner:
            return current
        self._entries[entry.function_id] = entry
        self._owned.setdefault(entry.owner, set()).add(entry.function_id)
        if current is None:
            self._changed()
        return None

    def unregister(self, function_id: str, owner: Host) -> bool:
        """Remove ``function_id`` if ``owner`` owns it; returns whether it did."""
        current = self._entries.get(function_id)
        if current is None or current.owner is not owner:
            return False
        del self._entries[function_id]
        owned = self._owned.get(owner)
        if owned is not None:
            owned.discard(function_id)
        self._changed()
        return True

    def owned_by(self, owner: Host) -> set[str]:
        return set(self._owned.get(owner, ()))

    def remove_owner(self, owner: Host) -> list[str]:
        """Remove every function ``owner`` owns; returns their ids."""
        removed = []
        for function_id in self._owned.pop(owner, set()):
            current = self._entries.get(function_id)
            if current is not None and current.owner is owner:
                del self._entries[function_id]
                removed.append(function_id)
        if removed:
            self._changed()
        return removed

    def transfer(self, old: Host, new: Host) -> list[str]:
        """Give every function of ``old`` to ``new`` (a reattaching worker); returns their ids."""
        moved = []
        for function_id in self._owned.pop(old, set()):
            current = self._entries.get(function_id)
            if current is not None and current.owner is old:
                current.owner = new
                self._owned.setdefault(new, set()).add(function_id)
                moved.append(function_id)
        return moved

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
