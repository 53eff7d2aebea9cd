"""The rows of the engine's listing and info builtins, read from its registries now.

Each row has the field names of the reference engine's answers (so clients written for it read ours
unchanged), plus a few of our own where noted: ``worker_id`` on function rows, ``status`` (and ``error``
when refused) on registered-trigger rows. Optional fields are left out when absent, as the reference
does. This engine has one namespace, ``default``; the engine's own functions and trigger types belong to
the worker name ``engine``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from iii.protocol.codec import decode_value, encode_value
from iii.protocol.messages import is_null

if TYPE_CHECKING:
    from iii.engine.core import Core
    from iii.engine.registry import FunctionEntry
    from iii.engine.triggers import Binding
    from iii.engine.worker_socket import WorkerConnection

NAMESPACE: Final = "default"
ENGINE_WORKER_NAME: Final = "engine"
"""The worker name given to the engine's own functions and trigger types."""
CONFIG_SUMMARY_MAX_CHARS: Final = 80


def _value(raw: msgspec.Raw) -> Any:
    """A stored JSON value, decoded (None for JSON null)."""
    return None if is_null(raw) else decode_value(raw)


def _put(row: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` only when there is a value (the reference leaves absent optional fields out)."""
    if value is not None:
        row[key] = value


def function_summary(entry: FunctionEntry) -> dict[str, Any]:
    """``{function_id, namespace, worker_name, worker_id, description?, metadata?}``."""
    owner = entry.owner
    row: dict[str, Any] = {
        "function_id": entry.function_id,
        "namespace": NAMESPACE,
        "worker_name": owner.name if owner is not None else (entry.module or ENGINE_WORKER_NAME),
        "worker_id": owner.worker_id if owner is not None else None,
    }
    _put(row, "description", entry.description)
    _put(row, "metadata", _value(entry.metadata))
    return row


def function_summaries(core: Core, visible: Callable[[FunctionEntry], bool] | None = None) -> list[dict[str, Any]]:
    """Every registered function (the engine's own included; only those ``visible`` accepts, if given), by id."""
    entries = core.functions.entries()
    if visible is not None:
        entries = (entry for entry in entries if visible(entry))
    return sorted((function_summary(e) for e in entries), key=lambda r: str(r["function_id"]))


def function_detail(core: Core, entry: FunctionEntry) -> dict[str, Any]:
    """A function's summary fields, its request and response schemas and the triggers bound to it."""
    row = function_summary(entry)
    _put(row, "request_schema", _value(entry.request_format))
    _put(row, "response_schema", _value(entry.response_format))
    row["registered_triggers"] = [
        {"id": b.binding_id, "trigger_type": b.trigger_type, "config": _value(b.config), "status": b.status()}
        for b in sorted(core.triggers.bindings(), key=lambda b: b.binding_id)
        if b.function_id == entry.function_id
    ]
    return row


def _type_summary(type_id: str, worker_name: str, description: str) -> dict[str, Any]:
    return {"id": type_id, "namespace": NAMESPACE, "worker_name": worker_name, "description": description}


def trigger_type_summaries(core: Core) -> list[dict[str, Any]]:
    """Every trigger type provided now, by the engine or a worker: ``{id, namespace, worker_name, description}``."""
    rows = [
        _type_summary(t.type_id, t.module or ENGINE_WORKER_NAME, t.description) for t in core.triggers.builtin_types()
    ]
    rows.extend(_type_summary(t.type_id, t.provider.name, t.description) for t in core.triggers.types())
    return sorted(rows, key=lambda r: str(r["id"]))


def trigger_type_detail(core: Core, type_id: str) -> dict[str, Any] | None:
    """A provided type's summary fields, its schemas and how many bindings it serves; None if not provided."""
    provided = core.triggers.provided_type(type_id)
    if provided is not None:
        row = _type_summary(type_id, provided.provider.name, provided.description)
        _put(row, "configuration_schema", _value(provided.trigger_request_format))
        _put(row, "request_schema", _value(provided.call_request_format))
    else:
        builtin = core.triggers.builtin_type(type_id)
        if builtin is None:
            return None
        row = _type_summary(type_id, builtin.module or ENGINE_WORKER_NAME, builtin.description)
    row["instance_count"] = sum(1 for b in core.triggers.bindings() if b.trigger_type == type_id and b.active)
    return row


def _worker_name_of_function(core: Core, binding: Binding) -> str:
    """The name of the worker serving the bound function; its binder's name while no one serves it."""
    entry = core.functions.get(binding.function_id)
    if entry is None:
        return binding.owner.name
    return entry.owner.name if entry.owner is not None else (entry.module or ENGINE_WORKER_NAME)


def config_summary(config: Any) -> str:
    """The config as compact JSON, cut to 80 characters (with an ellipsis): for display, not for parsing."""
    text = encode_value(config).decode()
    return text if len(text) <= CONFIG_SUMMARY_MAX_CHARS else text[:CONFIG_SUMMARY_MAX_CHARS] + "…"


def registered_trigger_summary(core: Core, binding: Binding) -> dict[str, Any]:
    """``{id, trigger_type, function_id, worker_name, config, config_summary, status, error?, details?}``.

    ``status`` is ours: ``active``, ``waiting`` (no one provides the type yet) or ``refused`` (by its
    provider; ``error`` says why). ``details`` too: what a provider inside the engine says about an active
    binding (a cron job's ``next_run``, say).
    """
    config = _value(binding.config)
    row: dict[str, Any] = {
        "id": binding.binding_id,
        "trigger_type": binding.trigger_type,
        "function_id": binding.function_id,
        "worker_name": _worker_name_of_function(core, binding),
        "config": config,
        "config_summary": config_summary(config),
        "status": binding.status(),
    }
    _put(row, "error", binding.refusal)
    details = core.triggers.details(binding)
    if details:
        row["details"] = dict(details)
    return row


def registered_trigger_summaries(core: Core) -> list[dict[str, Any]]:
    """Every binding, by id."""
    bindings = sorted(core.triggers.bindings(), key=lambda b: b.binding_id)
    return [registered_trigger_summary(core, b) for b in bindings]


def registered_trigger_detail(core: Core, binding: Binding) -> dict[str, Any]:
    """A binding with its metadata, its type's detail and its function's detail (each None if absent)."""
    row = registered_trigger_summary(core, binding)
    del row["config_summary"]
    _put(row, "metadata", _value(binding.metadata))
    row["trigger"] = trigger_type_detail(core, binding.trigger_type)
    entry = core.functions.get(binding.function_id)
    row["function"] = function_detail(core, entry) if entry is not None else None
    return row


def worker_summary(core: Core, worker: WorkerConnection) -> dict[str, Any]:
    """A connected worker: its self-reported metadata, function count, calls in flight, address."""
    meta = worker.metadata
    return {
        "id": worker.worker_id,
        "name": worker.name,
        "description": meta.get("description"),
        "runtime": meta.get("runtime"),
        "version": meta.get("version"),
        "os": meta.get("os"),
        "pid": meta.get("pid"),
        "isolation": meta.get("isolation"),
        "namespace": meta.get("namespace") or NAMESPACE,
        "status": "connected",
        "function_count": len(core.functions.owned_by(worker)),
        "active_invocations": core.router.pending_for_target(worker),
        "connected_at_ms": int(worker.connected_at * 1000),
        "ip_address": worker.peer_address,
    }


def worker_detail(core: Core, worker: WorkerConnection) -> dict[str, Any]:
    """``{worker, functions, trigger_types, registered_triggers}``: what one worker serves and provides."""
    envelope = worker_summary(core, worker)
    envelope["internal"] = False
    function_ids = core.functions.owned_by(worker)
    functions = [function_summary(e) for e in core.functions.entries() if e.function_id in function_ids]
    trigger_types = [
        _type_summary(t.type_id, worker.name, t.description) for t in core.triggers.types() if t.provider is worker
    ]
    registered = [r for r in registered_trigger_summaries(core) if r["function_id"] in function_ids]
    return {
        "worker": envelope,
        "functions": sorted(functions, key=lambda r: str(r["function_id"])),
        "trigger_types": sorted(trigger_types, key=lambda r: str(r["id"])),
        "registered_triggers": registered,
    }
