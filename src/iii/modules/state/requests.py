"""The payloads of the ``state::*`` functions, checked and typed (pure).

Field names are the reference engine's (``scope``, ``key``, ``value`` or its alias ``data``, ``ops``);
unknown fields are ignored, as there. Ours on top: ``expected_version`` (compare-and-set on set, update
and delete; 0 means "the key must be absent") and ``with_version`` (set and get: the result carries the
key's version). Every problem raises :class:`~iii.modules.api.FunctionError` with a code of
:mod:`iii.modules.state.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iii.modules.api import FunctionError
from iii.modules.state.errors import DESERIALIZATION_ERROR, INVALID_KEY, INVALID_SCOPE
from iii.modules.state.ops import Op, parse_ops


@dataclass(frozen=True, slots=True)
class Address:
    scope: str
    key: str


@dataclass(frozen=True, slots=True)
class SetRequest:
    address: Address
    value: Any
    expected_version: int | None
    with_version: bool


@dataclass(frozen=True, slots=True)
class GetRequest:
    address: Address
    with_version: bool


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    address: Address
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    address: Address
    ops: list[Op]
    expected_version: int | None


class Parser:
    """Reads payloads under the limits of one module (``max_name_bytes``)."""

    def __init__(self, max_name_bytes: int) -> None:
        self.max_name_bytes = max_name_bytes

    def set(self, data: Any) -> SetRequest:
        fields = payload_object(data, "state::set")
        if "value" in fields:
            value = fields["value"]
        elif "data" in fields:
            value = fields["data"]  # the reference accepts `data` for `value`
        else:
            raise malformed("state::set", "missing field `value`")
        return SetRequest(
            self._address(fields, "state::set"),
            value,
            _expected_version(fields, "state::set"),
            _flag(fields, "with_version", "state::set"),
        )

    def get(self, data: Any) -> GetRequest:
        fields = payload_object(data, "state::get")
        return GetRequest(self._address(fields, "state::get"), _flag(fields, "with_version", "state::get"))

    def delete(self, data: Any) -> DeleteRequest:
        fields = payload_object(data, "state::delete")
        return DeleteRequest(self._address(fields, "state::delete"), _expected_version(fields, "state::delete"))

    def update(self, data: Any) -> UpdateRequest:
        fields = payload_object(data, "state::update")
        address = self._address(fields, "state::update")
        if "ops" not in fields:
            raise malformed("state::update", "missing field `ops`")
        return UpdateRequest(address, parse_ops(fields["ops"]), _expected_version(fields, "state::update"))

    def list(self, data: Any) -> str:
        fields = payload_object(data, "state::list")
        return self._name(fields, "scope", "state::list", INVALID_SCOPE)

    def _address(self, fields: dict[str, Any], function_id: str) -> Address:
        return Address(
            self._name(fields, "scope", function_id, INVALID_SCOPE),
            self._name(fields, "key", function_id, INVALID_KEY),
        )

    def _name(self, fields: dict[str, Any], field: str, function_id: str, code: str) -> str:
        return checked_name(fields, field, function_id, code, self.max_name_bytes)


def checked_name(fields: dict[str, Any], field: str, function_id: str, code: str, max_bytes: int) -> str:
    """``fields[field]``, a non-empty string of valid Unicode of at most ``max_bytes`` UTF-8 bytes; a
    ``deserialization_error`` when it is missing or not a string, ``code`` when it is not such a name (the
    stream module's names are checked the same way)."""
    if field not in fields:
        raise malformed(function_id, f"missing field `{field}`")
    name = fields[field]
    if not isinstance(name, str):
        raise malformed(function_id, f"`{field}` must be a string")
    if not name:
        raise FunctionError(code, f"{function_id}: `{field}` must not be empty")
    try:
        size = len(name.encode())
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): no backend can store it
        raise FunctionError(code, f"{function_id}: `{field}` is not valid Unicode text") from None
    if size > max_bytes:
        raise FunctionError(code, f"{function_id}: `{field}` is {size} bytes, the limit is {max_bytes}")
    return name


def malformed(function_id: str, message: str) -> FunctionError:
    """The ``deserialization_error`` of a payload that does not have the function's fields."""
    return FunctionError(DESERIALIZATION_ERROR, f"Failed to deserialize input for {function_id}: {message}")


def payload_object(data: Any, function_id: str) -> dict[str, Any]:
    """``data``, which must be a JSON object."""
    if not isinstance(data, dict):
        raise malformed(function_id, "the payload must be an object")
    return data


def _expected_version(fields: dict[str, Any], function_id: str) -> int | None:
    version = fields.get("expected_version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise malformed(function_id, "`expected_version` must be an integer >= 0")
    return version


def _flag(fields: dict[str, Any], name: str, function_id: str) -> bool:
    flag = fields.get(name, False)
    if not isinstance(flag, bool):
        raise malformed(function_id, f"`{name}` must be true or false")
    return flag
