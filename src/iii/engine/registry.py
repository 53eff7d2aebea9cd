"""Which function id is served by whom.

One live owner per function id; the first live owner keeps it. A second worker asking for the same id is
refused but kept as a standby, in order: when the owner leaves (or withdraws the function), the first
standby serves it at once, so a rolling restart never leaves the id unserved. Builtins are entries with a
handler and no owner; nobody stands by for them. A function that a module serves for the worker that
registered it (an HTTP-invoked one, say: see ``FunctionEntry.kind``) has both: the worker owns it, as any of
its functions, and the handler serves it. This in-process registry is the seam where a shared (multi-engine)
registry would plug in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import msgspec

from iii.engine.peers import Host
from iii.protocol.messages import JSON_NULL

BuiltinHandler = Callable[[Any, Any], Any]
"""A builtin: ``handler(caller, data) -> result``; raises :class:`BuiltinInputError` on bad input."""

CALL_TRACEPARENT: ContextVar[str | None] = ContextVar("CALL_TRACEPARENT", default=None)
"""While a builtin's handler is called (the synchronous call, not what it awaits after), the W3C traceparent its
call came with, if any: a handler that needs it reads it before it returns or awaits."""


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
    """A registered function: hosted by ``owner``, or a builtin with ``handler``, or owned by ``owner`` and served
    by ``handler`` (a function of a ``kind``)."""

    function_id: str
    owner: Host | None = None
    handler: BuiltinHandler | None = None
    description: str | None = None
    metadata: msgspec.Raw = JSON_NULL
    request_format: msgspec.Raw = JSON_NULL
    response_format: msgspec.Raw = JSON_NULL
    module: str | None = None
    """The engine module that serves it (None for a worker's own function or an ``engine::*`` builtin)."""
    kind: str | None = None
    """For a worker's function that a module serves for it: the ``registerfunction`` field that said so
    (``invocation``)."""
    observe: Any = None
    """How the function is observed, as its owner declared it (``registerfunction.observe``, decoded), or None."""

    @property
    def is_builtin(self) -> bool:
        return self.owner is None


class FunctionRegistry:
    """Function ids mapped to their entries and standbys, with an index of what each host owns or awaits."""

    def __init__(self) -> None:
        self._entries: dict[str, FunctionEntry] = {}
        self._owned: dict[Host, set[str]] = {}
        self._standbys: dict[str, list[FunctionEntry]] = {}
        """Refused registrations by function id, first come first served."""
        self._awaited: dict[Host, set[str]] = {}
        """The function ids each host stands by for."""
        self.change_listeners: list[Callable[[], None]] = []
        """Called after a worker's function is added, removed or handed to a standby (not for builtins or updates)."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, function_id: str) -> FunctionEntry | None:
        return self._entries.get(function_id)

    def entries(self) -> Iterator[FunctionEntry]:
        return iter(list(self._entries.values()))

    def standbys(self, function_id: str) -> list[FunctionEntry]:
        """The entries waiting to serve ``function_id``, in the order they would take over."""
        return list(self._standbys.get(function_id, ()))

    def add_builtin(
        self,
        function_id: str,
        handler: BuiltinHandler,
        description: str,
        *,
        module: str | None = None,
        request_format: msgspec.Raw = JSON_NULL,
        response_format: msgspec.Raw = JSON_NULL,
    ) -> None:
        """Serve ``function_id`` inside the engine (by the core, or by ``module``); workers cannot take it."""
        self._entries[function_id] = FunctionEntry(
            function_id,
            handler=handler,
            description=description,
            module=module,
            request_format=request_format,
            response_format=response_format,
        )

    def register(self, entry: FunctionEntry) -> FunctionEntry | None:
        """Add or update ``entry`` for its owner.

        Returns ``None`` on success, or the current entry when another host (or a builtin) already owns the
        id. A worker's refused entry then stands by (replacing an earlier one of the same host) and takes
        over when the owner leaves; a builtin's id has no standbys.
        """
        host = entry.owner
        assert host is not None
        current = self._entries.get(entry.function_id)
        if current is not None and current.owner is not host:
            if current.owner is not None:
                waiting = self._standbys.setdefault(entry.function_id, [])
                for index, standby in enumerate(waiting):
                    if standby.owner is host:
                        waiting[index] = entry
                        break
                else:
                    waiting.append(entry)
                self._awaited.setdefault(host, set()).add(entry.function_id)
            return current
        self._entries[entry.function_id] = entry
        self._owned.setdefault(host, set()).add(entry.function_id)
        if current is None:
            self._changed()
        return None

    def take_over(self, entry: FunctionEntry) -> FunctionEntry | None:
        """Make ``entry`` the owner of its id ahead of the host that serves it now, which stands by first.

        For a cluster, where the registry on Redis decides who serves an id: a local worker that registered an
        id another engine holds waits behind the link to that engine. Returns the entry that now stands by.
        A builtin's id is never taken over (``ValueError``).
        """
        host = entry.owner
        assert host is not None
        current = self._entries.get(entry.function_id)
        if current is None or current.owner is host:
            self.register(entry)
            return None
        if current.owner is None:
            raise ValueError(f"{entry.function_id} is served inside the engine")
        self._unindex(self._owned, current.owner, entry.function_id)
        self._drop_standby(entry.function_id, host)
        self._unindex(self._awaited, host, entry.function_id)
        self._standbys.setdefault(entry.function_id, []).insert(0, current)
        self._awaited.setdefault(current.owner, set()).add(entry.function_id)
        self._entries[entry.function_id] = entry
        self._owned.setdefault(host, set()).add(entry.function_id)
        self._changed()
        return current

    def unregister(self, function_id: str, owner: Host) -> FunctionEntry | None:
        """Withdraw ``owner``'s registration of ``function_id`` (served or standing by).

        Returns the standby that now serves the id, if the owner's withdrawal handed it over.
        """
        if self._drop_standby(function_id, owner):
            self._unindex(self._awaited, owner, function_id)
            return None
        current = self._entries.get(function_id)
        if current is None or current.owner is not owner:
            return None
        self._unindex(self._owned, owner, function_id)
        successor = self._replace(function_id)
        self._changed()
        return successor

    def owned_by(self, owner: Host) -> set[str]:
        return set(self._owned.get(owner, ()))

    def remove_owner(self, owner: Host) -> tuple[list[str], list[FunctionEntry]]:
        """Remove everything ``owner`` serves or stands by for.

        Returns the ids it served, and the standbys that now serve some of them.
        """
        for function_id in self._awaited.pop(owner, set()):
            self._drop_standby(function_id, owner)
        removed, promoted = [], []
        for function_id in self._owned.pop(owner, set()):
            current = self._entries.get(function_id)
            if current is not None and current.owner is owner:
                removed.append(function_id)
                successor = self._replace(function_id)
                if successor is not None:
                    promoted.append(successor)
        if removed:
            self._changed()
        return removed, promoted

    def transfer(self, old: Host, new: Host) -> list[str]:
        """Give every function of ``old`` to ``new`` (a reattaching worker), standbys too; returns the ids served."""
        moved = []
        for function_id in self._owned.pop(old, set()):
            current = self._entries.get(function_id)
            if current is not None and current.owner is old:
                current.owner = new
                self._owned.setdefault(new, set()).add(function_id)
                moved.append(function_id)
        for function_id in self._awaited.pop(old, set()):
            for standby in self._standbys.get(function_id, ()):
                if standby.owner is old:
                    standby.owner = new
                    self._awaited.setdefault(new, set()).add(function_id)
        return moved

    # internals ---------------------------------------------------------------------------------------

    def _replace(self, function_id: str) -> FunctionEntry | None:
        """The owner of ``function_id`` left: the first standby takes over, or the id is free."""
        waiting = self._standbys.get(function_id)
        if not waiting:
            del self._entries[function_id]
            return None
        successor = waiting.pop(0)
        if not waiting:
            del self._standbys[function_id]
        assert successor.owner is not None
        self._unindex(self._awaited, successor.owner, function_id)
        self._entries[function_id] = successor
        self._owned.setdefault(successor.owner, set()).add(function_id)
        return successor

    def _drop_standby(self, function_id: str, host: Host) -> bool:
        waiting = self._standbys.get(function_id)
        if not waiting:
            return False
        kept = [standby for standby in waiting if standby.owner is not host]
        if len(kept) == len(waiting):
            return False
        if kept:
            self._standbys[function_id] = kept
        else:
            del self._standbys[function_id]
        return True

    @staticmethod
    def _unindex(index: dict[Host, set[str]], host: Host, function_id: str) -> None:
        ids = index.get(host)
        if ids is not None:
            ids.discard(function_id)
            if not ids:
                del index[host]

    def _changed(self) -> None:
        for listener in self.change_listeners:
            listener()
