"""Trigger types provided by workers, and the bindings of functions to them.

A worker that sends ``registertriggertype`` becomes the provider of that type (replacing any earlier
provider). A worker binds one of its functions with ``registertrigger``; the engine hands the binding to
the type's provider, or parks it until a provider registers, and hands every binding again (same id) to a
provider that comes back. ``unregistertrigger`` (or the binding worker's disconnect) is told to the
provider. A provider's refusal (``triggerregistrationresult`` with an error) parks the binding and is
forwarded to the worker that made it. Firing is the provider's business: it calls the bound function.

A binding to a type that no one provides is kept (its provider may connect later, as the reference engine
does) but never silently: the engine logs a warning, and the listings show the binding's status
(:meth:`Binding.status`: ``active``, ``waiting`` for a provider, or ``refused`` by it).

Some types are provided inside the engine (the core's own, and its modules': ``http``, ``cron``...): a
:class:`BuiltinProvider` is told of its bindings by plain calls instead of messages, and a worker cannot take
such a type over.

A binding can also be made with observe.v1's ``observe`` (its source a trigger type instead of a function:
:mod:`iii.engine.observing`): it is the same binding, and its owner is told of it in observe's words
(``observerstatechanged``) instead of ``triggerregistrationresult``.

State changes here are plain methods; what must be sent is returned to the caller as (host, message)
pairs, so the module is tested without sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

from iii.engine.peers import Host
from iii.protocol.codec import detached
from iii.protocol.messages import (
    JSON_NULL,
    ErrorBody,
    Message,
    ObserverStateChanged,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
    is_null,
)

log = logging.getLogger("iii.engine")

Outgoing = list[tuple[Host, Message]]
BindingStatus = Literal["active", "waiting", "refused"]


class Binding(msgspec.Struct, eq=False):
    """A function bound to a trigger type, owned by the worker that bound it."""

    binding_id: str
    trigger_type: str
    function_id: str
    owner: Host
    config: msgspec.Raw = JSON_NULL
    metadata: msgspec.Raw = JSON_NULL
    active: bool = False
    """Delivered to the current provider and not refused by it."""
    refusal: str | None = None
    """Why the current provider refused the binding (None unless it did)."""
    observed: bool = False
    """Made with ``observe`` (observe.v1): its owner is told of changes with ``observerstatechanged``."""

    def status(self) -> BindingStatus:
        """``active`` (with its provider), ``refused`` (by its provider) or ``waiting`` (for a provider)."""
        if self.active:
            return "active"
        return "refused" if self.refusal is not None else "waiting"

    def registration(self) -> RegisterTrigger:
        return RegisterTrigger(
            id=self.binding_id,
            trigger_type=self.trigger_type,
            function_id=self.function_id,
            config=self.config,
            metadata=self.metadata,
        )


class BuiltinProvider(Protocol):
    """A trigger type served inside the engine."""

    def activate(self, binding: Binding) -> str | None:
        """Start serving ``binding``; returns None when accepted, or why it was refused."""

    def deactivate(self, binding: Binding) -> None:
        """Stop serving ``binding`` (only called for an activated one)."""

    # A provider may also have ``describe(binding) -> Mapping``: fields the listings show with the binding.


BUILTIN_REFUSED = "trigger_registration_failed"
"""The error code of a binding a builtin provider refused (the reference engine's code)."""


class TriggerType(msgspec.Struct, eq=False):
    """A trigger type and the worker that provides it."""

    type_id: str
    provider: Host
    description: str = ""
    trigger_request_format: msgspec.Raw = JSON_NULL
    """The schema of a binding's ``config``, as the provider declared it (or JSON null)."""
    call_request_format: msgspec.Raw = JSON_NULL
    """The schema of what a bound function receives, as the provider declared it (or JSON null)."""


class BuiltinType(msgspec.Struct, eq=False):
    """A trigger type served inside the engine."""

    type_id: str
    provider: BuiltinProvider
    description: str = ""
    module: str | None = None
    """The engine module that provides it (None for the core's own types)."""


class TriggerRegistry:
    """Trigger types, their providers and the bindings to them."""

    def __init__(self) -> None:
        self._types: dict[str, TriggerType] = {}
        self._builtin: dict[str, BuiltinType] = {}
        self._bindings: dict[str, Binding] = {}

    def add_builtin(
        self, type_id: str, provider: BuiltinProvider, description: str = "", *, module: str | None = None
    ) -> None:
        """Serve ``type_id`` inside the engine (before any worker connects), by the core or by ``module``."""
        self._builtin[type_id] = BuiltinType(type_id, provider, description, module)

    def is_builtin(self, type_id: str) -> bool:
        return type_id in self._builtin

    def builtin_types(self) -> list[BuiltinType]:
        return list(self._builtin.values())

    def types(self) -> list[TriggerType]:
        return list(self._types.values())

    def bindings(self) -> list[Binding]:
        return list(self._bindings.values())

    def provided_type(self, type_id: str) -> TriggerType | None:
        """The worker-provided type ``type_id``, if a worker provides it now."""
        return self._types.get(type_id)

    def builtin_type(self, type_id: str) -> BuiltinType | None:
        return self._builtin.get(type_id)

    def details(self, binding: Binding) -> Mapping[str, Any]:
        """What the provider inside the engine says about an active binding (a cron job's next run, say)."""
        builtin = self._builtin.get(binding.trigger_type)
        describe = getattr(builtin.provider, "describe", None) if builtin is not None else None
        if describe is None or not binding.active:
            return {}
        try:
            found: Mapping[str, Any] = describe(binding)
        except Exception:
            log.exception("describing binding %s failed", binding.binding_id)
            return {}
        return found

    def binding(self, binding_id: str) -> Binding | None:
        return self._bindings.get(binding_id)

    def is_provided(self, type_id: str) -> bool:
        """Whether the engine or a worker provides ``type_id`` now."""
        return type_id in self._builtin or type_id in self._types

    def provider_of(self, type_id: str) -> Host | None:
        entry = self._types.get(type_id)
        return entry.provider if entry is not None else None

    def register_type(self, provider: Host, message: RegisterTriggerType) -> Outgoing:
        """``provider`` now provides ``message.id``; every binding of the type is (re)delivered to it."""
        self._types[message.id] = TriggerType(
            message.id,
            provider,
            message.description,
            detached(message.trigger_request_format),  # the message points into the socket's receive buffer
            detached(message.call_request_format),
        )
        return self._deliver_all(message.id)

    def unregister_type(self, provider: Host, type_id: str) -> Outgoing:
        """The provider withdraws the type; its bindings are parked until a provider registers again."""
        entry = self._types.get(type_id)
        if entry is not None and entry.provider is provider:
            del self._types[type_id]
            return self._park(type_id)
        return []

    def bind(self, owner: Host, message: RegisterTrigger, *, observed: bool = False) -> Outgoing:
        """Add (or replace) a binding made by ``owner``; delivered now if the type has a provider. ``observed``:
        made with ``observe``."""
        current = self._bindings.get(message.id)
        if current is not None and current.owner is not owner:
            return []  # another worker's binding id: not this worker's to replace
        if current is not None:
            self._deactivate_builtin(current)
        binding = Binding(
            message.id,
            message.trigger_type,
            message.function_id,
            owner,
            detached(message.config),  # the message points into the socket's receive buffer
            detached(message.metadata),
            observed=observed,
        )
        self._bindings[message.id] = binding
        builtin = self._builtin.get(binding.trigger_type)
        if builtin is not None:
            return self._activate_builtin(builtin.provider, binding)
        provider = self.provider_of(binding.trigger_type)
        if provider is None:
            log.warning(
                "worker=%s trigger %s (function %s) is waiting: no worker provides trigger type %r; "
                "it is delivered when one registers the type",
                owner.worker_id,
                binding.binding_id,
                binding.function_id,
                binding.trigger_type,
            )
            return []
        binding.active = True
        return [(provider, binding.registration())]

    def unbind(self, owner: Host, binding_id: str) -> Outgoing:
        """Remove ``owner``'s binding and tell the provider."""
        binding = self._bindings.get(binding_id)
        if binding is None or binding.owner is not owner:
            return []
        del self._bindings[binding_id]
        if self._deactivate_builtin(binding):
            return []
        return self._tell_provider_unbound(binding)

    def on_provider_result(self, provider: Host, message: TriggerRegistrationResult) -> Outgoing:
        """A provider accepted or refused a binding; a refusal parks it and goes to the binding's owner."""
        binding = self._bindings.get(message.id)
        if binding is None or self.provider_of(binding.trigger_type) is not provider or is_null(message.error):
            return []
        binding.active = False
        binding.refusal = _error_text(message.error)
        return [(binding.owner, _refusal(binding, detached(message.error)))]

    def remove_worker(self, worker: Host) -> Outgoing:
        """A worker left: its bindings are removed (providers told), the types it provided are withdrawn."""
        outgoing: Outgoing = []
        for binding in [b for b in self._bindings.values() if b.owner is worker]:
            del self._bindings[binding.binding_id]
            if self._deactivate_builtin(binding):
                continue
            if self.provider_of(binding.trigger_type) is not worker:
                outgoing.extend(self._tell_provider_unbound(binding))
        for type_id in [t.type_id for t in self._types.values() if t.provider is worker]:
            del self._types[type_id]
            outgoing.extend(self._park(type_id))
        return outgoing

    def transfer(self, old: Host, new: Host) -> None:
        """A reattaching worker takes over the old connection's bindings and provided types."""
        for binding in self._bindings.values():
            if binding.owner is old:
                binding.owner = new
        for entry in self._types.values():
            if entry.provider is old:
                entry.provider = new

    @staticmethod
    def _activate_builtin(provider: BuiltinProvider, binding: Binding) -> Outgoing:
        problem = provider.activate(binding)
        if problem is None:
            binding.active, binding.refusal = True, None
            return []
        binding.refusal = problem
        error = msgspec.Raw(msgspec.json.encode({"code": BUILTIN_REFUSED, "message": problem}))
        return [(binding.owner, _refusal(binding, error))]

    def _deactivate_builtin(self, binding: Binding) -> bool:
        """If ``binding`` is of a builtin type, take it out of service; returns whether it was builtin."""
        builtin = self._builtin.get(binding.trigger_type)
        if builtin is None:
            return False
        if binding.active:
            binding.active = False
            builtin.provider.deactivate(binding)
        return True

    def _deliver_all(self, type_id: str) -> Outgoing:
        provider = self.provider_of(type_id)
        if provider is None:
            return []
        outgoing: Outgoing = []
        for binding in self._bindings.values():
            if binding.trigger_type == type_id:
                binding.active, binding.refusal = True, None
                outgoing.append((provider, binding.registration()))
                if binding.observed:
                    outgoing.append((binding.owner, ObserverStateChanged(id=binding.binding_id, state="active")))
        return outgoing

    def _park(self, type_id: str) -> Outgoing:
        waiting = 0
        outgoing: Outgoing = []
        for binding in self._bindings.values():
            if binding.trigger_type == type_id:
                binding.active, binding.refusal = False, None
                waiting += 1
                if binding.observed:
                    outgoing.append((binding.owner, ObserverStateChanged(id=binding.binding_id, state="suspended")))
        if waiting:
            # Info, not a warning: a provider restarting is routine, and the listings show the bindings waiting.
            log.info(
                "trigger type %r is no longer provided: %d trigger(s) of it wait until a worker provides it again",
                type_id,
                waiting,
            )
        return outgoing

    def _tell_provider_unbound(self, binding: Binding) -> Outgoing:
        provider = self.provider_of(binding.trigger_type)
        if provider is None or not binding.active:
            return []
        return [(provider, UnregisterTrigger(id=binding.binding_id, trigger_type=binding.trigger_type))]


def _refusal(binding: Binding, error: msgspec.Raw) -> Message:
    """What the owner of a refused binding is told: ``triggerregistrationresult``, or for a binding made with
    ``observe``, ``observerstatechanged`` to ``error``."""
    if not binding.observed:
        return TriggerRegistrationResult(
            id=binding.binding_id, trigger_type=binding.trigger_type, function_id=binding.function_id, error=error
        )
    try:
        value = msgspec.json.decode(error)
    except (msgspec.DecodeError, RecursionError):
        value = None
    code = value.get("code") if isinstance(value, dict) else None
    reason = ErrorBody(code=code if isinstance(code, str) and code else BUILTIN_REFUSED, message=_error_text(error))
    return ObserverStateChanged(id=binding.binding_id, state="error", reason=reason)


def _error_text(error: msgspec.Raw) -> str:
    """The message of a provider's refusal (its ``message`` field, else the raw JSON)."""
    try:
        value = msgspec.json.decode(error)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        value = None
    if isinstance(value, dict) and isinstance(value.get("message"), str) and value["message"]:
        return str(value["message"])
    return bytes(error).decode("utf-8", "replace")
