"""What one worker admitted on the RBAC port may do: its grants, the hooks and the middleware, as a
:class:`~iii.modules.api.WorkerPolicy`.

Registrations pass the auth function's switches first (``allow_function_registration``,
``allow_trigger_type_registration``, ``allowed_trigger_types``), then the hook function, if one is configured
(it answers the registration, with any field changed, or raises to refuse it; fields it leaves out or null keep
their value), then the auth function's ``function_registration_prefix`` (``prefix::id`` for a function, and for
the function a trigger binds). A hook that cannot be called (not registered, too slow) refuses too: nothing is
registered that the hook has not seen.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Final

from iii.modules.api import (
    FunctionDeclaration,
    FunctionError,
    InterceptedCall,
    InvocationError,
    ModuleHost,
    TriggerDeclaration,
    TriggerTypeDeclaration,
)
from iii.protocol import errors

from .rules import DEFAULT_NAMESPACE, Grants, Verdict, decide
from .settings import RbacSettings

log = logging.getLogger("iii.modules.rbac")

UNAVAILABLE: Final = frozenset(
    (errors.FUNCTION_NOT_FOUND, errors.TIMEOUT, errors.INVOCATION_STOPPED, errors.LIMIT_EXCEEDED)
)
"""Error codes that say a configured function could not be called (not that it answered no): it is not
registered, it took too long, its worker left, or the engine was at a limit."""


class RbacPolicy:
    """The policy of one admitted worker (see the module docstring)."""

    def __init__(self, host: ModuleHost, settings: RbacSettings, grants: Grants) -> None:
        self._host = host
        self._settings = settings
        self.grants = grants

    # --- calls -----------------------------------------------------------------------------------------

    def check_call(self, function_id: str, metadata: Any) -> None:
        verdict = decide(function_id, metadata, self.grants, self._settings.expose_functions)
        if verdict is Verdict.FORBIDDEN:
            raise FunctionError(
                errors.FORBIDDEN,
                f"function '{function_id}' is forbidden to this worker by the auth function (forbidden_functions)",
            )
        if verdict is Verdict.NOT_EXPOSED:
            raise FunctionError(
                errors.FORBIDDEN,
                f"function '{function_id}' is not exposed to this worker: add it to rbac.expose_functions, or "
                "have the auth function allow it (allowed_functions)",
            )

    def intercept(self, call: InterceptedCall) -> Awaitable[Any] | None:
        middleware = self._settings.middleware_function_id
        if middleware is None or call.engine_builtin:  # the engine's own functions answer for this worker itself
            return None
        return self._through_middleware(middleware, call)

    async def _through_middleware(self, middleware: str, call: InterceptedCall) -> Any:
        request = {
            "function_id": call.function_id,
            "payload": call.payload,
            "action": call.action,
            "context": self.grants.context,
        }
        try:
            return await self._host.invoke(middleware, request, timeout_s=call.timeout_s, metadata=call.metadata)
        except InvocationError as exc:
            if exc.code in UNAVAILABLE:
                log.warning("middleware %s could not be called for %s: %s", middleware, call.function_id, exc.code)
            raise FunctionError(exc.code, f"middleware {middleware}: {exc.message}") from None

    # --- registrations ---------------------------------------------------------------------------------

    def function(self, declared: FunctionDeclaration) -> FunctionDeclaration | Awaitable[FunctionDeclaration]:
        if not self.grants.allow_function_registration:
            raise FunctionError(
                errors.FORBIDDEN, "this worker may not register functions (allow_function_registration)"
            )
        hook = self._settings.on_function_registration_function_id
        if hook is None:
            return self._prefixed(declared)
        return self._function_hook(hook, declared)

    async def _function_hook(self, hook: str, declared: FunctionDeclaration) -> FunctionDeclaration:
        request = {
            "function_id": declared.function_id,
            "description": declared.description,
            "metadata": declared.metadata,
            "namespace": DEFAULT_NAMESPACE,
            "context": self.grants.context,
        }
        answer = await self._call_hook(hook, request, f"function {declared.function_id}")
        changed = FunctionDeclaration(
            _text(answer, "function_id", declared.function_id, hook),
            _text(answer, "description", declared.description, hook),
            declared.metadata if answer.get("metadata") is None else answer["metadata"],
        )
        return self._prefixed(changed)

    def trigger(self, declared: TriggerDeclaration) -> TriggerDeclaration | Awaitable[TriggerDeclaration]:
        allowed = self.grants.allowed_trigger_types
        if allowed is not None and declared.trigger_type not in allowed:
            raise FunctionError(
                errors.FORBIDDEN,
                f"trigger type {declared.trigger_type} is not allowed for this worker (allowed_trigger_types)",
            )
        hook = self._settings.on_trigger_registration_function_id
        if hook is None:
            return self._bound_in_prefix(declared)
        return self._trigger_hook(hook, declared)

    async def _trigger_hook(self, hook: str, declared: TriggerDeclaration) -> TriggerDeclaration:
        request = {
            "trigger_id": declared.trigger_id,
            "trigger_type": declared.trigger_type,
            "function_id": declared.function_id,
            "config": declared.config,
            "metadata": declared.metadata,
            "namespace": DEFAULT_NAMESPACE,
            "context": self.grants.context,
        }
        answer = await self._call_hook(hook, request, f"trigger {declared.trigger_id}")
        changed = TriggerDeclaration(
            _text(answer, "trigger_id", declared.trigger_id, hook),
            _text(answer, "trigger_type", declared.trigger_type, hook),
            _text(answer, "function_id", declared.function_id, hook),
            declared.config if answer.get("config") is None else answer["config"],
            declared.metadata,
        )
        return self._bound_in_prefix(changed)

    def trigger_type(
        self, declared: TriggerTypeDeclaration
    ) -> TriggerTypeDeclaration | Awaitable[TriggerTypeDeclaration]:
        if not self.grants.allow_trigger_type_registration:
            raise FunctionError(
                errors.FORBIDDEN, "this worker may not register trigger types (allow_trigger_type_registration)"
            )
        hook = self._settings.on_trigger_type_registration_function_id
        if hook is None:
            return declared
        return self._trigger_type_hook(hook, declared)

    async def _trigger_type_hook(self, hook: str, declared: TriggerTypeDeclaration) -> TriggerTypeDeclaration:
        request = {
            "trigger_type_id": declared.trigger_type_id,
            "description": declared.description,
            "context": self.grants.context,
        }
        answer = await self._call_hook(hook, request, f"trigger type {declared.trigger_type_id}")
        return TriggerTypeDeclaration(
            _text(answer, "trigger_type_id", declared.trigger_type_id, hook),
            _text(answer, "description", declared.description, hook),
        )

    # --- helpers ---------------------------------------------------------------------------------------

    def _prefixed(self, declared: FunctionDeclaration) -> FunctionDeclaration:
        prefix = self.grants.function_registration_prefix
        if prefix is None:
            return declared
        return dataclasses.replace(declared, function_id=f"{prefix}::{declared.function_id}")

    def _bound_in_prefix(self, declared: TriggerDeclaration) -> TriggerDeclaration:
        prefix = self.grants.function_registration_prefix
        if prefix is None:
            return declared
        return dataclasses.replace(declared, function_id=f"{prefix}::{declared.function_id}")

    async def _call_hook(self, hook: str, request: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        """The hook's answer (an object), or :class:`FunctionError` refusing ``what``."""
        try:
            answer = await self._host.invoke(hook, request, timeout_s=self._settings.hook_timeout_s)
        except InvocationError as exc:
            if exc.code in UNAVAILABLE:
                log.warning("hook %s could not be called for %s: %s: refused", hook, what, exc.code)
                raise FunctionError(
                    errors.FORBIDDEN, f"{what}: the hook {hook} could not be called ({exc.code})"
                ) from None
            raise FunctionError(errors.FORBIDDEN, f"{what} refused by {hook}: {exc.message}") from None
        if not isinstance(answer, dict):
            log.warning("hook %s answered %s for %s, not an object: refused", hook, type(answer).__name__, what)
            raise FunctionError(errors.FORBIDDEN, f"{what}: the hook {hook} did not answer an object")
        return answer


def _text(answer: Mapping[str, Any], key: str, current: Any, hook: str) -> Any:
    """A hook's new value for a text field: its string, or ``current`` when it left the field out or null."""
    value = answer.get(key)
    if value is None:
        return current
    if not isinstance(value, str) or (not value and key.endswith("_id")):
        raise FunctionError(errors.FORBIDDEN, f"the hook {hook} answered a {key} that is not a non-empty string")
    return value
