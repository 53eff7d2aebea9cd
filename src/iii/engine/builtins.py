"""The ``engine::*`` functions, answered inside the engine without a round trip to any worker.

Each builtin is ``handler(caller, data) -> result`` where ``caller`` is the calling
:class:`~iii.engine.worker_socket.WorkerConnection` (or ``None`` for calls from inside the engine) and
``data`` the decoded payload. Input of the wrong shape raises :class:`BuiltinInputError`, which the
caller receives as ``deserialization_error``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from iii.engine.registry import BuiltinInputError, BuiltinLimitError
from iii.protocol.codec import decode_value
from iii.protocol.messages import is_null

if TYPE_CHECKING:
    from iii.engine.server import Engine
    from iii.engine.worker_socket import WorkerConnection

log = logging.getLogger("iii.engine")

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


class Builtins:
    """The builtin functions of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def install(self) -> None:
        registry = self.engine.functions
        registry.add_builtin("engine::workers::register", self.workers_register, "Describe the calling worker")
        registry.add_builtin("engine::workers::list", self.workers_list, "List connected workers")
        registry.add_builtin("engine::functions::list", self.functions_list, "List registered functions")
        registry.add_builtin("engine::channels::create", self.channels_create, "Create a data channel")
        registry.add_builtin("engine::channels::list", self.channels_list, "List live data channels")
        registry.add_builtin("engine::triggers::list", self.triggers_list, "List trigger types and bindings")

    def workers_register(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Store the caller's name and metadata (sent by every SDK, as a void call, after connecting)."""
        fields = _as_object(data, "engine::workers::register")
        if caller is None:
            return {"success": False}
        name = _optional_str(fields, "name")
        if name:
            caller.name = name
        caller.metadata = {key: fields[key] for key in _WORKER_METADATA_KEYS if key in fields}
        log.info(
            "worker=%s name=%s runtime=%s pid=%s registered",
            caller.worker_id,
            caller.name,
            caller.metadata.get("runtime"),
            caller.metadata.get("pid"),
        )
        return {"success": True}

    def workers_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Every connected worker with its metadata, function count and calls in flight."""
        fields = _as_object(data, "engine::workers::list")
        search = _optional_str(fields, "search")
        workers = []
        for worker in self.engine.workers.values():
            if search and search not in worker.name and search not in worker.worker_id:
                continue
            meta = worker.metadata
            workers.append(
                {
                    "id": worker.worker_id,
                    "name": worker.name,
                    "description": meta.get("description"),
                    "runtime": meta.get("runtime"),
                    "version": meta.get("version"),
                    "os": meta.get("os"),
                    "pid": meta.get("pid"),
                    "isolation": meta.get("isolation"),
                    "namespace": meta.get("namespace") or "default",
                    "status": "connected",
                    "function_count": len(self.engine.functions.owned_by(worker)),
                    "active_invocations": self.engine.router.pending_for_target(worker),
                    "connected_at_ms": int(worker.connected_at * 1000),
                    "ip_address": worker.peer_address,
                }
            )
        return {"workers": workers}

    def functions_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Registered functions; ``engine::*`` only with ``include_internal``."""
        fields = _as_object(data, "engine::functions::list")
        search = _optional_str(fields, "search")
        prefix = _optional_str(fields, "prefix")
        include_internal = bool(fields.get("include_internal"))
        functions = []
        for entry in self.engine.functions.entries():
            function_id = entry.function_id
            if entry.is_builtin and not include_internal:
                continue
            if prefix and not function_id.startswith(prefix):
                continue
            if search and search not in function_id:
                continue
            item: dict[str, Any] = {
                "function_id": function_id,
                "namespace": "default",
                "worker_name": entry.owner.name if entry.owner is not None else "engine",
                "worker_id": entry.owner.worker_id if entry.owner is not None else None,
            }
            if entry.description is not None:
                item["description"] = entry.description
            if not is_null(entry.metadata):
                item["metadata"] = decode_value(entry.metadata)
            functions.append(item)
        return {"functions": functions}

    def channels_create(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """A new channel: ``{"writer": ref, "reader": ref}``, each ref with its own key."""
        fields = _as_object(data, "engine::channels::create")
        size = fields.get("buffer_size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise BuiltinInputError(f"'buffer_size' must be an integer or null, got {type(size).__name__}")
        channels = self.engine.channels
        if caller is not None:
            limit = self.engine.config.worker_max_channels
            if channels.owned_by(caller.worker_id) >= limit:
                raise BuiltinLimitError(
                    f"this worker has {limit} live channels, its limit (--worker-max-channels); "
                    "finish or abandon some first"
                )
        channel = channels.create(size, caller.worker_id if caller is not None else None)
        channel_id = channel.channel_id
        return {
            "writer": {"channel_id": channel_id, "access_key": channel.writer_key, "direction": "write"},
            "reader": {"channel_id": channel_id, "access_key": channel.reader_key, "direction": "read"},
        }

    def channels_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Every live channel: id, state of each end, frames and bytes relayed, age. Never the keys."""
        _as_object(data, "engine::channels::list")
        return {"channels": self.engine.channels.describe(), "as_of_ms": int(time.time() * 1000)}

    def triggers_list(self, caller: WorkerConnection | None, data: Any) -> dict[str, Any]:
        """Trigger types (with who provides them) and bindings (with whether they are in service)."""
        _as_object(data, "engine::triggers::list")
        registry = self.engine.triggers
        types = [{"id": type_id, "provider": "engine", "description": ""} for type_id in registry.builtin_types()]
        types.extend(
            {"id": entry.type_id, "provider": entry.provider.worker_id, "description": entry.description}
            for entry in registry.types()
        )
        bindings = [
            {
                "id": binding.binding_id,
                "type": binding.trigger_type,
                "function_id": binding.function_id,
                "worker_id": binding.owner.worker_id,
                "config": decode_value(binding.config),
                "active": binding.active,
            }
            for binding in registry.bindings()
        ]
        return {"trigger_types": types, "triggers": bindings}
