"""The ``engine::*`` functions, answered inside the engine without a round trip to any worker.

Each builtin is ``handler(caller, data) -> result`` where ``caller`` is the calling
:class:`~iii.engine.worker_socket.WorkerConnection` (or ``None`` for calls from inside the engine) and
``data`` the decoded payload. Input of the wrong shape raises :class:`BuiltinInputError`, which the
caller receives as ``deserialization_error``; an unknown id is ``NOT_FOUND`` and contradictory arguments
``INVALID_ARGUMENTS`` (the reference engine's codes).

The listing and info builtins take the reference engine's inputs (``search``: case-insensitive substring;
``prefix``; ``worker``: exact worker name; ``include_internal``: show ``engine::*`` rows too) and answer
with its shapes (rows built in :mod:`iii.engine.introspection`). ``engine::channels::*`` are ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iii.engine import introspection
from iii.engine.observer_records import OBSERVE_FEATURE
from iii.engine.registry import CALL_TRACEPARENT, BuiltinFailure, BuiltinInputError, BuiltinLimitError
from iii.engine.spans import in_trace

if TYPE_CHECKING:
    from iii.engine.core import Core
    from iii.engine.worker_socket import WorkerConnection

log = logging.getLogger("iii.engine")

NOT_FOUND = "NOT_FOUND"
INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
FORBIDDEN = "FORBIDDEN"
FUNCTION_INFO_BATCH_MAX = 32
"""At most this many ids in one ``engine::functions::info`` call (the reference engine's limit)."""

_WORKER_METADATA_KEYS = (
    "runtime",
    "version",
    "os",
    "pid",
    "isolation",
    "namespace",
    "description",
    "telemetry",
)


def _as_object(data: Any, function_id: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BuiltinInputError(f"{function_id} takes a JSON object, got {type(data).__name__}")
    return data


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise BuiltinInputError(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _required_str(data: dict[str, Any], key: str, function_id: str) -> str:
    value = _optional_str(data, key)
    if value is None:
        raise BuiltinInputError(f"{function_id} needs '{key}' (a string)")
    return value


def _optional_str_list(data: dict[str, Any], key: str) -> list[str] | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, list) or not all(isinstance(item, str) for item in value)):
        raise BuiltinInputError(f"'{key}' must be a list of strings")
    return value


def _matches(search: str | None, *texts: str | None) -> bool:
    """Whether ``search`` (case-insensitive) is in any of ``texts``; no search matches everything."""
    if not search:
        return True
    needle = search.lower()
    return any(needle in text.lower() for text in texts if text)


def _search_rank(function_id: str, needle: str) -> int:
    """0: the search anchors the id (its start or a whole ``::`` segment), 1: inside the id, 2: elsewhere."""
    lowered = function_id.lower()
    if lowered.startswith(needle) or needle in lowered.split("::"):
        return 0
    return 1 if needle in lowered else 2


def _is_internal(row: dict[str, Any]) -> bool:
    """An ``engine::*`` function, or one its worker marked ``metadata.internal``."""
    metadata = row.get("metadata")
    tagged = isinstance(metadata, dict) and metadata.get("internal") is True
    return str(row["function_id"]).startswith("engine::") or tagged


def _check_namespace(data: dict[str, Any]) -> None:
    namespace = _optional_str(data, "namespace")
    if namespace is not None and namespace != introspection.NAMESPACE:
        raise BuiltinFailure(NOT_FOUND, f"Namespace '{namespace}' does not exist on this engine (only 'default').")


class Builtins:
    """The builtin functions of one engine."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.release_elsewhere: Callable[[list[dict[str, Any]], str], int] | None = None
        """In a cluster, how ends of other engines' channels are released at their owners (set by the engine)."""

    def install(self) -> None:
        for function_id, handler, description in [
            ("engine::workers::register", self.workers_register, "Describe the calling worker"),
            ("engine::workers::list", self.workers_list, "List connected workers"),
            ("engine::workers::info", self.workers_info, "Inspect one worker: functions, trigger types, triggers"),
            ("engine::functions::list", self.functions_list, "List registered functions"),
            ("engine::functions::info", self.functions_info, "Inspect functions: schemas, owner, triggers"),
            ("engine::triggers::list", self.triggers_list, "List trigger types"),
            ("engine::triggers::info", self.triggers_info, "Inspect one trigger type"),
            ("engine::registered-triggers::list", self.registered_triggers_list, "List registered triggers"),
            ("engine::registered-triggers::info", self.registered_triggers_info, "Inspect one registered trigger"),
            ("engine::channels::create", self.channels_create, "Create a data channel"),
            ("engine::channels::list", self.channels_list, "List live data channels"),
            ("engine::channels::release", self.channels_release, "Finish channel ends their holder will not use"),
            ("engine::observers::list", self.observers_list, "List observers (observe.v1)"),
            ("engine::observers::get", self.observers_get, "Inspect one observer: state, filters, fires, drops"),
        ]:
            self.core.functions.add_builtin(function_id, handler, description)

    # --- observers -------------------------------------------------------------------------------------

    def observers_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Every observer (``function_id``: only those observing it; ``worker_id``: only that worker's)."""
        fields = _as_object(data, "engine::observers::list")
        function_id = _optional_str(fields, "function_id")
        worker_id = _optional_str(fields, "worker_id")
        observers = [
            observer.describe()
            for observer in self.core.observing.table
            if (function_id is None or observer.source == function_id)
            and (worker_id is None or observer.watcher.worker_id == worker_id)
        ]
        return {"observers": observers}

    def observers_get(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        fields = _as_object(data, "engine::observers::get")
        observer_id = _required_str(fields, "id", "engine::observers::get")
        observer = self.core.observing.table.get(observer_id)
        if observer is None:
            raise BuiltinFailure(NOT_FOUND, f"Observer {observer_id!r} was not found.")
        return {"observer": observer.describe()}

    # --- workers ---------------------------------------------------------------------------------------

    def workers_register(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Store the caller's name and metadata (sent by every SDK, as a void call, after connecting)."""
        fields = _as_object(data, "engine::workers::register")
        if caller is None:
            return {"success": False}
        name = _optional_str(fields, "name")
        if name:
            caller.name = name
        caller.metadata = {key: fields[key] for key in _WORKER_METADATA_KEYS if key in fields}
        features = fields.get("features")
        if isinstance(features, list) and caller.session is None:  # no observe.v1 on the RBAC port (core.py)
            caller.features = frozenset(f for f in features if isinstance(f, str))
            if OBSERVE_FEATURE in caller.features:
                self.core.observing.declared(caller)
        log.info(
            "worker=%s name=%s runtime=%s pid=%s registered",
            caller.worker_id,
            caller.name,
            caller.metadata.get("runtime"),
            caller.metadata.get("pid"),
        )
        self.core.availability.worker_changed("worker_metadata_updated", caller.worker_id)
        return {"success": True}

    def workers_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Every connected worker (``search`` in its name or id, exact ``runtime``, exact ``status``)."""
        fields = _as_object(data, "engine::workers::list")
        search = _optional_str(fields, "search")
        runtime = _optional_str(fields, "runtime")
        status = _optional_str(fields, "status")
        workers = []
        for worker in self.core.workers.values():
            if not _matches(search, worker.name, worker.worker_id):
                continue
            row = introspection.worker_summary(self.core, worker)
            if (runtime is not None and row["runtime"] != runtime) or (status is not None and row["status"] != status):
                continue
            workers.append(row)
        return {"workers": workers}

    def workers_info(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """One worker's full surface, by ``name`` (or, ours, its id)."""
        fields = _as_object(data, "engine::workers::info")
        name = _required_str(fields, "name", "engine::workers::info")
        _check_namespace(fields)
        found = [w for w in self.core.workers.values() if w.name == name]
        if not found and name in self.core.workers:
            found = [self.core.workers[name]]
        if not found:
            raise BuiltinFailure(NOT_FOUND, f"Worker '{name}' is not connected.")
        if len(found) > 1:
            ids = ", ".join(w.worker_id for w in found)
            raise BuiltinFailure(
                NOT_FOUND,
                f"Worker '{name}' is ambiguous: {len(found)} connected workers have this name ({ids}); "
                "pass one of their ids as 'name'.",
            )
        return introspection.worker_detail(self.core, found[0])

    # --- functions -------------------------------------------------------------------------------------

    def functions_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Registered functions, by id (ranked by how well they match ``search``, when given).

        ``engine::*`` functions and those marked ``metadata.internal`` only with ``include_internal``; for a
        caller whose connection has a session, only the functions it may see.
        """
        fields = _as_object(data, "engine::functions::list")
        search = _optional_str(fields, "search")
        prefix = _optional_str(fields, "prefix")
        worker = _optional_str(fields, "worker")
        workers = _optional_str_list(fields, "workers") or []
        names = {*workers, *([worker] if worker is not None else [])}
        include_internal = bool(fields.get("include_internal"))
        session = caller.session if caller is not None else None
        visible = None if session is None else lambda entry: session.visible(entry.function_id, entry)
        functions = [
            row
            for row in introspection.function_summaries(self.core, visible)
            if (include_internal or not _is_internal(row))
            and (not prefix or str(row["function_id"]).startswith(prefix))
            and (not names or row["worker_name"] in names)
            and _matches(search, row["function_id"], row.get("description"))
        ]
        if search:
            needle = search.lower()
            functions.sort(key=lambda row: (_search_rank(row["function_id"], needle), row["function_id"]))
        return {"functions": functions}

    def functions_info(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """One function's detail (``function_id``), or ``{"functions": [...]}`` for ``function_ids`` (max 32).

        In a batch an unknown id gets ``{"function_id", "error": "not_found"}`` instead of failing the call. For a
        caller whose connection has a session, a function it may not see is ``FORBIDDEN`` (``"error":
        "forbidden"`` in a batch), whether it exists or not.
        """
        fields = _as_object(data, "engine::functions::info")
        function_id = _optional_str(fields, "function_id")
        function_ids = _optional_str_list(fields, "function_ids")
        _check_namespace(fields)
        session = caller.session if caller is not None else None
        if function_id is not None and function_ids is not None:
            raise BuiltinFailure(INVALID_ARGUMENTS, "pass either `function_id` or `function_ids`, not both")
        if function_id is not None:
            entry = self.core.functions.get(function_id)
            if session is not None and not session.visible(function_id, entry):
                raise BuiltinFailure(FORBIDDEN, f"Function '{function_id}' is not visible to this connection.")
            if entry is None:
                raise BuiltinFailure(NOT_FOUND, f"Function '{function_id}' is not registered.")
            return introspection.function_detail(self.core, entry)
        if function_ids is None:
            raise BuiltinFailure(INVALID_ARGUMENTS, "missing field `function_id` (or `function_ids` for a batch)")
        unique = list(dict.fromkeys(function_ids))
        if not unique:
            raise BuiltinFailure(INVALID_ARGUMENTS, "`function_ids` must be a non-empty array of function ids")
        if len(unique) > FUNCTION_INFO_BATCH_MAX:
            raise BuiltinFailure(INVALID_ARGUMENTS, f"too many function_ids (max {FUNCTION_INFO_BATCH_MAX})")
        details = []
        for each in unique:
            entry = self.core.functions.get(each)
            if session is not None and not session.visible(each, entry):
                details.append({"function_id": each, "error": "forbidden"})
            elif entry is None:
                details.append({"function_id": each, "error": "not_found"})
            else:
                details.append(introspection.function_detail(self.core, entry))
        return {"functions": details}

    # --- trigger types and registered triggers ---------------------------------------------------------

    def triggers_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Trigger types provided now, by id; ``engine::*`` types only with ``include_internal``.

        Ours: ``waiting`` lists the types that registered triggers use but no one provides (each with the
        ids of its triggers and a warning), so a binding to a missing type is never silent.
        """
        fields = _as_object(data, "engine::triggers::list")
        search = _optional_str(fields, "search")
        prefix = _optional_str(fields, "prefix")
        worker = _optional_str(fields, "worker")
        include_internal = bool(fields.get("include_internal"))
        triggers = [
            row
            for row in introspection.trigger_type_summaries(self.core)
            if (include_internal or not str(row["id"]).startswith("engine::"))
            and (not prefix or str(row["id"]).startswith(prefix))
            and (worker is None or row["worker_name"] == worker)
            and _matches(search, row["id"], row["description"])
        ]
        waiting: dict[str, list[str]] = {}
        for binding in self.core.triggers.bindings():
            if not self.core.triggers.is_provided(binding.trigger_type):
                waiting.setdefault(binding.trigger_type, []).append(binding.binding_id)
        return {
            "triggers": triggers,
            "waiting": [
                {
                    "trigger_type": type_id,
                    "registered_triggers": sorted(ids),
                    "warning": f"no worker provides trigger type '{type_id}': "
                    f"{len(ids)} trigger(s) wait until one registers it",
                }
                for type_id, ids in sorted(waiting.items())
            ],
        }

    def triggers_info(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """One provided trigger type: schemas, provider, number of active bindings."""
        fields = _as_object(data, "engine::triggers::info")
        type_id = _required_str(fields, "id", "engine::triggers::info")
        _check_namespace(fields)
        detail = introspection.trigger_type_detail(self.core, type_id)
        if detail is None:
            raise BuiltinFailure(NOT_FOUND, f"Trigger type '{type_id}' is not registered in namespace 'default'.")
        return detail

    def registered_triggers_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Every binding, by id; those of ``engine::*`` functions only with ``include_internal``."""
        fields = _as_object(data, "engine::registered-triggers::list")
        search = _optional_str(fields, "search")
        trigger_type = _optional_str(fields, "trigger_type")
        function_id = _optional_str(fields, "function_id")
        worker = _optional_str(fields, "worker")
        include_internal = bool(fields.get("include_internal"))
        rows = [
            row
            for row in introspection.registered_trigger_summaries(self.core)
            if (include_internal or not str(row["function_id"]).startswith("engine::"))
            and (trigger_type is None or row["trigger_type"] == trigger_type)
            and (function_id is None or row["function_id"] == function_id)
            and (worker is None or row["worker_name"] == worker)
            and _matches(search, row["id"], row["trigger_type"], row["function_id"])
        ]
        return {"registered_triggers": rows}

    def registered_triggers_info(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """One binding, with its trigger type's and its function's detail."""
        fields = _as_object(data, "engine::registered-triggers::info")
        binding_id = _required_str(fields, "id", "engine::registered-triggers::info")
        binding = self.core.triggers.binding(binding_id)
        if binding is None:
            raise BuiltinFailure(NOT_FOUND, f"Registered trigger '{binding_id}' was not found.")
        return introspection.registered_trigger_detail(self.core, binding)

    # --- channels (ours) -------------------------------------------------------------------------------

    def channels_create(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """A new channel: ``{"writer": ref, "reader": ref}``, each ref with its own key."""
        fields = _as_object(data, "engine::channels::create")
        size = fields.get("buffer_size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise BuiltinInputError(f"'buffer_size' must be an integer or null, got {type(size).__name__}")
        channels = self.core.channels
        if caller is not None:
            limit = self.core.config.worker_max_channels
            if channels.owned_by(caller.worker_id) >= limit:
                raise BuiltinLimitError(
                    f"this worker has {limit} live channels, its limit (--worker-max-channels); "
                    "finish or abandon some first"
                )
        channel = channels.create(size, caller.worker_id if caller is not None else None)
        channel_id = channel.channel_id
        spans = self.core.spans
        context = CALL_TRACEPARENT.get()
        if spans is not None and in_trace(context):  # its lifetime, in the trace of the call that made it
            attributes = [("iii.channel.id", channel_id), ("iii.channel.buffer_frames", str(channel.buffer_frames))]
            if caller is not None:
                attributes.append(("iii.caller.worker_id", caller.worker_id))
            channel.span = spans.start(f"channel {channel_id}", context, attributes)
        return {
            "writer": {"channel_id": channel_id, "access_key": channel.writer_key, "direction": "write"},
            "reader": {"channel_id": channel_id, "access_key": channel.reader_key, "direction": "read"},
        }

    def channels_release(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Finish ends that never connected and never will: ``{"ends": [ref, ...], "reason"?}``.

        Our SDK sends it (void) for the ends a handler was given and left untouched, so their peers learn at
        once: a released reader fails its writer (4002), a released writer ends its reader's stream (4004).
        A ref must carry its end's key. Returns how many ends were released; unknown or connected ends are
        skipped.
        """
        fields = _as_object(data, "engine::channels::release")
        ends = fields.get("ends")
        if not isinstance(ends, list):
            raise BuiltinInputError("'ends' must be a list of channel refs")
        given = fields.get("reason")
        reason = given if isinstance(given, str) else "released by its holder"
        released, elsewhere = 0, []
        for ref in ends:
            if not isinstance(ref, dict):
                continue
            channel_id, key = ref.get("channel_id"), ref.get("access_key")
            if not isinstance(channel_id, str) or not isinstance(key, str):
                continue
            found = self.core.channels.find(channel_id, key)
            if found is not None:
                released += found[0].release(found[1], reason)
            elif self.release_elsewhere is not None:
                elsewhere.append({"channel_id": channel_id, "access_key": key})
        if elsewhere and self.release_elsewhere is not None:
            released += self.release_elsewhere(elsewhere, reason)
        return {"released": released}

    def channels_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Every live channel: id, state of each end, frames and bytes relayed, age. Never the keys."""
        _as_object(data, "engine::channels::list")
        return {"channels": self.core.channels.describe(), "as_of_ms": int(time.time() * 1000)}
