"""The rbac module's settings: its address from the engine's ``--rbac-*`` flags, the rest from ``[rbac]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .rules import ExposeRule, parse_rules

FUNCTION_ID_SETTINGS = (
    "auth_function_id",
    "middleware_function_id",
    "on_function_registration_function_id",
    "on_trigger_registration_function_id",
    "on_trigger_type_registration_function_id",
)


@dataclass(frozen=True, slots=True)
class RbacSettings:
    """The RBAC worker listener: where it listens, which functions decide, which functions it exposes.

    The function ids name functions that trusted workers (those of the engine's own port) register; the listener
    calls them. As in the reference's ``iii-worker-manager`` configuration::

        [rbac]
        auth_function_id = "my-project::auth"
        middleware_function_id = "my-project::middleware"
        on_function_registration_function_id = "my-project::on-function-reg"
        expose_functions = ['match("api::*")', { metadata = { public = true } }]
    """

    host: str = "127.0.0.1"
    """From ``--rbac-host``: loopback unless the operator opens it wider."""
    port: int = 0
    """From ``--rbac-port`` (0: any free port)."""
    auth_function_id: str | None = None
    """Called with ``{headers, query_params, ip_address}`` for every worker that connects; it answers an
    ``AuthResult`` or raises to refuse the worker. None: every worker is admitted (with no grants)."""
    middleware_function_id: str | None = None
    """Called instead of the function for every call an admitted worker makes (but the engine's own
    ``engine::*`` functions), with ``{function_id, payload, action, context}``; it calls the function itself."""
    on_function_registration_function_id: str | None = None
    """Called for every function a worker registers; answers the (possibly changed) registration or raises."""
    on_trigger_registration_function_id: str | None = None
    """Called for every trigger a worker registers; answers the (possibly changed) trigger or raises."""
    on_trigger_type_registration_function_id: str | None = None
    """Called for every trigger type a worker registers; answers the (possibly changed) type or raises."""
    expose_functions: tuple[ExposeRule, ...] = ()
    """Which functions every admitted worker may call and see (see :mod:`.rules`); none by default."""
    auth_timeout_s: float = 10.0
    """How long the auth function may take; a worker it has not answered by then is told to try again."""
    hook_timeout_s: float = 10.0
    """How long a registration hook may take; a registration it has not answered by then is refused."""

    def __post_init__(self) -> None:
        problems = []
        for name in FUNCTION_ID_SETTINGS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{name} must be a non-empty function id, got {value!r}")
        try:
            object.__setattr__(self, "expose_functions", parse_rules(self.expose_functions))
        except ValueError as exc:
            problems.append(str(exc))
        for name in ("auth_timeout_s", "hook_timeout_s"):
            seconds: Any = getattr(self, name)
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
                problems.append(f"{name} must be a positive number of seconds, got {seconds!r}")
        if problems:
            raise ValueError("; ".join(problems))
