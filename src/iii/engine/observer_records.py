"""Observers and observable functions as the engine keeps them, and what it accepts of the requests that make
them (an ``observe``, a ``registerfunction``'s observe descriptor). No I/O; the table is :mod:`iii.engine.observers`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import jsonschema
import msgspec

from iii.engine.filters import Filter, FilterError, compile_filter
from iii.engine.peers import Host
from iii.protocol.codec import decode_value, detached
from iii.protocol.messages import Observe, is_null

OBSERVE_FEATURE: Final = "observe.v1"
LOCAL_DISPATCH_FEATURE: Final = "local-dispatch.v1"
NAMESPACE: Final = "default"
"""The one namespace this engine serves."""

DEFAULT_MAX_IN_FLIGHT: Final = 64

CAPTURES: Final = ("input", "output", "error", "caller", "metadata")
DEFAULT_CAPTURE: Final = ("input", "output", "caller")
ON_VALUES: Final = frozenset({"success", "error", "complete"})
DELIVER_VALUES: Final = frozenset({"envelope", "input", "output"})

State = Literal["pending", "active", "suspended", "error", "disposed"]


def speaks_observe(host: Host) -> bool:
    return OBSERVE_FEATURE in host.features


class ObserveRefused(Exception):
    """An observer (or an observe descriptor) the engine will not take, with the protocol's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Source:
    """An observable function as its owner registered it."""

    function_id: str
    host: Host
    delivery: str = "auto"
    args_validator: Any = None
    """A jsonschema validator of the observers' ``args`` (owner delivery only), or None."""
    allow: bool = True
    legacy_trigger_type: str | None = None
    told: bool = False
    """Its owner speaks observe.v1 and was sent its observer set."""

    @classmethod
    def declared(cls, function_id: str, host: Host, descriptor: dict[str, Any] | None) -> Source:
        """The source ``host`` registered, with its checked descriptor (:func:`parse_descriptor`) if it had one."""
        source = cls(function_id, host)
        if descriptor is not None:
            source.delivery = descriptor["delivery"]
            source.allow = descriptor["allow"]
            source.legacy_trigger_type = descriptor["legacy"]
            schema = descriptor["args_format"]
            if schema is not None:
                source.args_validator = jsonschema.validators.validator_for(schema)(schema)
        return source


@dataclass(eq=False)
class Observer:
    observer_id: str
    watcher: Host
    """The worker that made it (and replays it after a reconnect)."""
    source: str
    target: str
    args: dict[str, Any]
    filter: Filter
    capture: tuple[str, ...]
    on: str
    deliver: str
    metadata: msgspec.Raw
    max_fires: int | None
    expires_at: float | None
    max_in_flight: int
    state: State = "pending"
    reason: dict[str, str] | None = None
    ever_active: bool = False
    accepted: bool = False
    """The source's owner accepted it (or does not take part: it does not speak observe.v1)."""
    watcher_left_at: float | None = None
    fires: int = 0
    failures: int = 0
    """Activations whose target answered an error."""
    in_flight: int = 0
    waiting: deque[tuple[Callable[[], None], int]] = field(default_factory=deque)
    """Activations held back by ``max_in_flight``: how to start each, and its payload's size."""
    waiting_bytes: int = 0
    pumping: bool = False
    """Waiting activations are being started (see ``Observing._pump``)."""
    dropped: Counter[str] = field(default_factory=Counter)
    legacy: dict[str, Any] | None = None
    """An old worker's ``registertrigger`` this observer stands for: ``{trigger_type, config}``."""

    def owner_view(self) -> dict[str, Any]:
        """The observer as the source's owner sees it: never its metadata, policy or watcher."""
        view = {
            "id": self.observer_id,
            "args": self.args,
            "filters": self.filter.normal,
            "target": self.target,
            "capture": list(self.capture),
            "on": self.on,
        }
        if self.legacy is not None:
            view["legacy"] = self.legacy
        return view

    def describe(self) -> dict[str, Any]:
        """The observer in full, for ``engine::observers::*`` and the console."""
        return {
            "id": self.observer_id,
            "state": self.state,
            "reason": self.reason,
            "source": {"function_id": self.source, "namespace": NAMESPACE, "args": self.args},
            "target": {"function_id": self.target, "namespace": NAMESPACE},
            "filters": self.filter.normal,
            "capture": list(self.capture),
            "on": self.on,
            "deliver": self.deliver,
            "worker_id": self.watcher.worker_id,
            "worker_name": self.watcher.name,
            "max_fires": self.max_fires,
            "max_in_flight": self.max_in_flight,
            "fires": self.fires,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "waiting": len(self.waiting),
            "dropped": dict(self.dropped),
        }


def parse_descriptor(function_id: str, raw: msgspec.Raw) -> dict[str, Any] | None:
    """``registerfunction.observe`` checked: ``{delivery, args_format, allow, legacy_trigger_type}`` or None;
    :class:`ObserveRefused` (``INVALID_OBSERVE_DESCRIPTOR``) when it is not one."""
    if is_null(raw):
        return None

    def refuse(problem: str) -> ObserveRefused:
        return ObserveRefused("INVALID_OBSERVE_DESCRIPTOR", f"function {function_id}: observe.{problem}")

    try:
        value = decode_value(raw)
    except (msgspec.DecodeError, RecursionError):
        raise refuse("descriptor is not JSON") from None
    if not isinstance(value, dict):
        raise ObserveRefused("INVALID_OBSERVE_DESCRIPTOR", f"function {function_id}: observe must be an object")
    delivery = value.get("delivery") or "auto"
    if delivery not in ("auto", "owner"):
        raise refuse(f"delivery must be 'auto' or 'owner', not {delivery!r}")
    args_format = value.get("args_format")
    if args_format is not None:
        if delivery != "owner":
            raise refuse("args_format needs delivery 'owner' (an auto-delivered function takes no args)")
        try:
            jsonschema.validators.validator_for(args_format).check_schema(args_format)
        except jsonschema.SchemaError as exc:
            raise refuse(f"args_format is not a JSON Schema: {exc.message}") from None
    allow = value.get("allow")
    if allow is not None and not isinstance(allow, bool):
        raise refuse("allow must be a boolean")
    legacy = value.get("legacy_trigger_type")
    if legacy is not None and not isinstance(legacy, str):
        raise refuse("legacy_trigger_type must be a string")
    return {"delivery": delivery, "args_format": args_format, "allow": allow is not False, "legacy": legacy}


def new_observer(watcher: Host, message: Observe, now: float) -> Observer:
    """The observer an ``observe`` asks for, checked (:class:`ObserveRefused` with the protocol's code); its args
    are checked against its source later (:func:`check_args`), once the source is registered."""
    source, target = message.source, message.target
    source_id, target_id = source.get("function_id"), target.get("function_id")
    if not isinstance(source_id, str) or not source_id or not isinstance(target_id, str) or not target_id:
        raise ObserveRefused("INVALID_OBSERVER", "observe needs source.function_id and target.function_id")
    for side in (source, target):
        namespace = side.get("namespace")
        if namespace not in (None, NAMESPACE):
            raise ObserveRefused("NAMESPACE_NOT_FOUND", f"namespace {namespace!r} does not exist on this engine")
    if source_id == target_id:
        raise ObserveRefused("SELF_TARGET", f"{source_id} cannot observe itself")
    try:
        observe_filter = compile_filter(source.get("filters"))
    except FilterError as exc:
        raise ObserveRefused(FilterError.code, str(exc)) from None
    args = source.get("args")
    if args is not None and not isinstance(args, dict):
        raise ObserveRefused("INVALID_ARGS", "source.args must be an object")
    capture = source.get("capture")
    if capture is None:
        capture = list(DEFAULT_CAPTURE)
    if not isinstance(capture, list) or any(c not in CAPTURES for c in capture):
        raise ObserveRefused("INVALID_OBSERVER", f"source.capture holds only {', '.join(CAPTURES)}")
    on = source.get("on") or "success"
    deliver = source.get("deliver") or "envelope"
    if on not in ON_VALUES:
        raise ObserveRefused("INVALID_OBSERVER", f"source.on is success, error or complete, not {on!r}")
    if deliver not in DELIVER_VALUES:
        raise ObserveRefused("INVALID_OBSERVER", f"source.deliver is envelope, input or output, not {deliver!r}")
    for name in ("max_fires", "expires_in_ms", "max_in_flight"):
        value = getattr(message, name)
        if value is not None and value <= 0:
            raise ObserveRefused("INVALID_OBSERVER", f"{name} must be positive")
    expires_at = None if message.expires_in_ms is None else now + message.expires_in_ms / 1000
    return Observer(
        observer_id=message.id,
        watcher=watcher,
        source=source_id,
        target=target_id,
        args=args or {},
        filter=observe_filter,
        capture=tuple(dict.fromkeys(capture)),
        on=on,
        deliver=deliver,
        metadata=detached(message.metadata),  # the message points into the socket's receive buffer
        max_fires=message.max_fires,
        expires_at=expires_at,
        max_in_flight=message.max_in_flight or DEFAULT_MAX_IN_FLIGHT,
    )


def check_args(observer: Observer, source: Source) -> None:
    """The observer's args against its (registered) source: ``NOT_OBSERVABLE``, ``INVALID_ARGS``."""
    if not source.allow:
        raise ObserveRefused("NOT_OBSERVABLE", f"{observer.source} does not allow observers")
    if source.delivery == "auto":
        if observer.args:
            problem = f"{observer.source} is auto-delivered: it takes no args"
            raise ObserveRefused("INVALID_ARGS", problem)
        return
    if source.args_validator is not None:
        error = jsonschema.exceptions.best_match(source.args_validator.iter_errors(observer.args))
        if error is not None:
            raise ObserveRefused("INVALID_ARGS", f"args of {observer.source}: {error.message}")
