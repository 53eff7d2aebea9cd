"""The state module: ``state::*`` functions over a backend, and the ``state`` trigger type.

Functions (the reference engine's names, payloads and results):

* ``state::set {scope, key, value}`` -> ``{"old_value", "new_value"}`` (``old_value`` null when created).
* ``state::get {scope, key}`` -> the value, or null when absent.
* ``state::delete {scope, key}`` -> the deleted value, or null.
* ``state::update {scope, key, ops}`` -> ``{"old_value", "new_value", "errors"?}``, the ops applied in order
  and atomically (:mod:`iii.modules.state.ops`).
* ``state::list {scope}`` -> the scope's values, in key order.
* ``state::list_groups {}`` -> ``{"groups": [...]}``, the non-empty scopes, sorted.

Ours on top, leaving those shapes as the official SDKs' tests expect them: every key has a ``version``
(1 when created, +1 on each write). ``state::update`` results carry it; ``state::set`` results carry it
when asked (``with_version: true``, or an ``expected_version``); ``state::get`` with ``with_version: true``
answers ``{"value", "version"}`` (version 0: absent). ``expected_version`` on set, update and delete makes
the write conditional: it is refused with ``version_mismatch`` unless the key is at that version (0: the
key must be absent). A deleted key starts again at version 1 when written. Values whose JSON is longer than
``max_value_bytes`` are refused by set and by update (``VALUE_TOO_LARGE``); see
:mod:`iii.modules.state.errors` for every code.

Every write is durable when it is answered (see the backends), and its triggers are started before the
answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from iii.modules.api import FunctionError, MetricSample, ModuleHost
from iii.modules.state.errors import DESERIALIZATION_ERROR, FAILED, VALUE_TOO_LARGE, VERSION_MISMATCH
from iii.modules.state.ops import MISSING, apply_ops
from iii.modules.state.redis_store import RedisStore
from iii.modules.state.requests import Address, Parser
from iii.modules.state.serving import counted_handler
from iii.modules.state.settings import StateSettings
from iii.modules.state.sqlite_store import SqliteStore
from iii.modules.state.store import Applied, Entry, StateStore, StoreError, VersionConflict, decode, encode
from iii.modules.state.triggers import CREATED, DELETED, TRIGGER_TYPE, UPDATED, StateTriggers

log = logging.getLogger("iii.modules.state")

_RECENT_KEYS_KEPT: Final = 200
"""How many recently written keys the module remembers for the console (over all scopes)."""
_FAILURE_MESSAGES: Final = {
    "state::set": "Failed to set value",
    "state::get": "Failed to get value",
    "state::delete": "Failed to delete value",
    "state::update": "Failed to update value",
    "state::list": "Failed to list values",
    "state::list_groups": "Failed to list groups",
}


async def open_store(settings: StateSettings) -> StateStore:
    """The backend ``settings`` choose, opened."""
    if settings.resolved_backend == "redis":
        assert settings.redis_url is not None  # StateSettings checks it
        return await RedisStore.open(settings.redis_url, prefix=settings.redis_key_prefix)
    return await SqliteStore.open(
        settings.data_dir,
        synchronous=settings.sqlite_synchronous,
        batch_max_writes=settings.sqlite_batch_max_writes,
    )


def _check_version(address: Address, expected: int | None, current: Entry | None) -> None:
    actual = current.version if current is not None else 0
    if expected is not None and actual != expected:
        raise _mismatch(address, expected, actual)


def _mismatch(address: Address, expected: int | None, actual: int) -> FunctionError:
    return FunctionError(
        VERSION_MISMATCH,
        f"{address.scope}/{address.key} is at version {actual} (0: absent), not the expected {expected}",
    )


class StateModule:
    """The state module (:class:`~iii.modules.api.Module`); see the module docstring."""

    name = "state"

    def __init__(self, settings: StateSettings) -> None:
        self.settings = settings
        self._parser = Parser(settings.max_name_bytes)
        self._store: StateStore | None = None
        self._triggers: StateTriggers | None = None
        self._operations: Counter[tuple[str, str]] = Counter()
        """(function id, outcome ``ok`` / ``refused`` / ``failed``) -> calls."""
        self._scope_counts: dict[str, int] = {}
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._stats_task: asyncio.Task[None] | None = None

    # --- Module ------------------------------------------------------------------------------------

    async def start(self, host: ModuleHost) -> None:
        self._store = await open_store(self.settings)
        log.info("state: %s backend at %s", self._store.kind, self._store.describe())
        self._triggers = StateTriggers(
            host, enabled=self.settings.triggers_enabled, max_waiting=self.settings.trigger_max_waiting
        )
        host.register_trigger_type(TRIGGER_TYPE, self._triggers, description="State trigger")
        functions: list[tuple[str, Callable[[Any], Awaitable[Any]], str]] = [
            ("state::set", self._set, "Set a value in state"),
            ("state::get", self._get, "Get a value from state"),
            ("state::delete", self._delete, "Delete a value from state"),
            ("state::update", self._update, "Update a value in state"),
            ("state::list", self._list, "Get a group from state"),
            ("state::list_groups", self._list_groups, "List all state groups"),
        ]
        for function_id, run, description in functions:
            host.register_function(
                function_id,
                counted_handler(
                    function_id, run, self._operations, (FAILED[function_id], _FAILURE_MESSAGES[function_id]), log
                ),
                description=description,
            )
        await self.refresh_stats()
        self._stats_task = asyncio.get_running_loop().create_task(self._refresh_periodically())

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        if self._store is not None:
            await self._store.close()  # the writes already submitted are committed first
        if self._triggers is not None:
            await self._triggers.close()

    def metrics(self) -> Iterable[MetricSample]:
        for (function_id, outcome), count in sorted(self._operations.items()):
            yield MetricSample(
                "state_operations",
                count,
                {"function": function_id, "outcome": outcome},
                help="state::* calls by function and outcome (ok, refused: a bad request, failed: the backend)",
                kind="counter",
            )
        yield MetricSample("state_scopes", len(self._scope_counts), help="Scopes holding at least one key")
        for scope, count in sorted(self._scope_counts.items()):
            yield MetricSample("state_keys", count, {"scope": scope}, help="Keys per scope")
        if self._store is not None:
            for counter, value in sorted(self._store.counters().items()):
                yield MetricSample(
                    f"state_{self._store.kind}_{counter}",
                    value,
                    help=f"The {self._store.kind} backend's {counter}",
                    kind="counter",
                )
        if self._triggers is not None:
            yield from self._triggers.metrics()

    def snapshot(self) -> Mapping[str, Any]:
        recent: dict[str, list[str]] = {}
        for scope, key in reversed(self._recent):
            keys = recent.setdefault(scope, [])
            if len(keys) < self.settings.snapshot_recent_keys:
                keys.append(key)
        operations: dict[str, dict[str, int]] = {}
        for (function_id, outcome), count in sorted(self._operations.items()):
            operations.setdefault(function_id, {})[outcome] = count
        return {
            "backend": self._store.kind if self._store is not None else self.settings.resolved_backend,
            "location": self._store.describe() if self._store is not None else None,
            "scopes": [
                {"scope": scope, "keys": count, "recent_keys": recent.get(scope, [])}
                for scope, count in sorted(self._scope_counts.items())
            ],
            "operations": operations,
        }

    async def settle_triggers(self) -> None:
        """Wait until the trigger calls of the writes answered so far are done (for tests and tools)."""
        if self._triggers is not None:
            await self._triggers.settle()

    async def refresh_stats(self) -> None:
        """Read the key counts per scope from the backend (``metrics()`` and ``snapshot()`` show the last read)."""
        try:
            self._scope_counts = await self._open_store().scope_counts()
        except StoreError as error:
            log.warning("state: could not count keys: %s", error)

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            await self.refresh_stats()

    # --- serving -----------------------------------------------------------------------------------

    def _open_store(self) -> StateStore:
        if self._store is None:
            raise StoreError("the state module is not started")
        return self._store

    def _encode(self, value: Any, function_id: str) -> bytes:
        try:
            encoded = encode(value)
        except (TypeError, ValueError) as error:  # e.g. a string holding a lone surrogate
            raise FunctionError(DESERIALIZATION_ERROR, f"{function_id}: the value cannot be stored: {error}") from None
        if len(encoded) > self.settings.max_value_bytes:
            raise FunctionError(
                VALUE_TOO_LARGE,
                f"value of {len(encoded)} bytes exceeds the configured max_value_bytes limit of "
                f"{self.settings.max_value_bytes}",
            )
        return encoded

    def _wrote(self, address: Address, applied: Applied[Any]) -> None:
        """Remember a written key for the console (a deleted one is forgotten)."""
        name = (address.scope, address.key)
        self._recent.pop(name, None)
        if applied.version > 0:
            self._recent[name] = None
            if len(self._recent) > _RECENT_KEYS_KEPT:
                self._recent.popitem(last=False)

    def _fire(self, event_type: str, address: Address, old_value: Any, new_value: Any) -> None:
        assert self._triggers is not None
        self._triggers.fire(event_type, address.scope, address.key, old_value, new_value)

    async def _set(self, data: Any) -> Any:
        request = self._parser.set(data)
        encoded = self._encode(request.value, "state::set")
        address = request.address
        try:
            applied = await self._open_store().put(address.scope, address.key, encoded, request.expected_version)
        except VersionConflict as conflict:
            raise _mismatch(address, request.expected_version, conflict.actual) from None
        old_value = decode(applied.old.value) if applied.old is not None else None
        self._wrote(address, applied)
        self._fire(UPDATED if applied.old is not None else CREATED, address, old_value, request.value)
        result = {"old_value": old_value, "new_value": request.value}
        if request.with_version or request.expected_version is not None:
            result["version"] = applied.version
        return result

    async def _get(self, data: Any) -> Any:
        request = self._parser.get(data)
        entry = await self._open_store().get(request.address.scope, request.address.key)
        value = decode(entry.value) if entry is not None else None
        if request.with_version:
            return {"value": value, "version": entry.version if entry is not None else 0}
        return value

    async def _delete(self, data: Any) -> Any:
        request = self._parser.delete(data)
        address = request.address

        def change(current: Entry | None) -> tuple[None, None]:
            _check_version(address, request.expected_version, current)
            return None, None

        applied = await self._open_store().mutate(address.scope, address.key, change)
        if applied.old is None:
            return None
        old_value = decode(applied.old.value)
        self._wrote(address, applied)
        self._fire(DELETED, address, old_value, None)
        return old_value

    async def _update(self, data: Any) -> Any:
        request = self._parser.update(data)
        address = request.address

        def change(current: Entry | None) -> tuple[bytes, tuple[Any, Any, list[dict[str, Any]]]]:
            _check_version(address, request.expected_version, current)
            old = decode(current.value) if current is not None else MISSING
            working = decode(current.value) if current is not None else MISSING  # apply_ops changes it in place
            new, errors = apply_ops(working, request.ops)
            return self._encode(new, "state::update"), (old, new, errors)

        applied = await self._open_store().mutate(address.scope, address.key, change)
        old, new, errors = applied.outcome
        old_value = None if old is MISSING else old
        self._wrote(address, applied)
        self._fire(UPDATED if applied.old is not None else CREATED, address, old_value, new)
        result: dict[str, Any] = {"old_value": old_value, "new_value": new}
        if errors:
            result["errors"] = errors
        result["version"] = applied.version
        return result

    async def _list(self, data: Any) -> Any:
        scope = self._parser.list(data)
        return [decode(value) for value in await self._open_store().values(scope)]

    async def _list_groups(self, data: Any) -> Any:
        return {"groups": await self._open_store().scopes()}
