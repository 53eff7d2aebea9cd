"""The update ops of ``state::update``: parsing them and applying them to a value (pure, no I/O).

An update is a list of ops applied in order to the key's value (``{}`` when the key is absent). The shapes
and rules are the reference engine's:

* ``{"type": "set", "path": p, "value": v}``: ``path`` ``""`` replaces the value, else sets field ``p``
  of an object (``value`` absent means null).
* ``{"type": "merge", "path"?: p, "value": {...}}``: shallow-merges an object into the value (no path) or
  into the object at ``p``, a field name or a list of literal field names (a nested path; missing or
  non-object steps become objects).
* ``{"type": "increment" | "decrement", "path": p, "by": n}``: adds or subtracts the integer ``n`` at
  field ``p`` (``""``: the value itself); a missing number counts as 0.
* ``{"type": "append", "path"?: p, "value": v}``: pushes ``v`` onto an array, or concatenates a string
  onto a string; a missing target becomes ``[v]`` (or ``v`` if it is a string and the path is not nested).
* ``{"type": "remove", "path": p}``: removes field ``p`` (``""``: the value becomes null).

A malformed op (unknown ``type``, a missing or ill-typed field) makes the whole call a
``deserialization_error``, as in the reference. An op that cannot apply to the value it meets (incrementing
a string, a path segment named ``__proto__``) is skipped and reported in the result's ``errors``
(``{"op_index", "code", "message"}``, the reference's codes such as ``increment.not_number``) while the
other ops apply. One difference: a root merge into a value that is not an object is reported
(``merge.target_not_object``); the reference skips it silently.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Final

from iii.modules.api import FunctionError
from iii.modules.state.errors import DESERIALIZATION_ERROR

MAX_PATH_DEPTH: Final = 32
MAX_SEGMENT_BYTES: Final = 256
MAX_MERGE_DEPTH: Final = 16
MAX_MERGE_KEYS: Final = 1024
FORBIDDEN_SEGMENTS: Final = frozenset({"__proto__", "constructor", "prototype"})
"""JavaScript prototype-pollution sinks, refused as path segments and as merged keys (as the reference does)."""


class _Missing:
    """The value of an absent key (distinct from a stored null)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __deepcopy__(self, memo: dict[int, Any]) -> _Missing:
        return self  # one instance: absence is tested with `is`


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class SetOp:
    path: str
    value: Any


@dataclass(frozen=True, slots=True)
class MergeOp:
    path: list[str]
    value: Any


@dataclass(frozen=True, slots=True)
class AddOp:
    """``increment`` (``sign`` 1) or ``decrement`` (``sign`` -1)."""

    name: str
    path: str
    by: int
    sign: int


@dataclass(frozen=True, slots=True)
class AppendOp:
    path: list[str]
    value: Any


@dataclass(frozen=True, slots=True)
class RemoveOp:
    path: str


Op = SetOp | MergeOp | AddOp | AppendOp | RemoveOp


# --- parsing -----------------------------------------------------------------------------------------


def _malformed(index: int, message: str) -> FunctionError:
    return FunctionError(
        DESERIALIZATION_ERROR, f"Failed to deserialize input for state::update: ops[{index}]: {message}"
    )


def _field_path(raw: dict[str, Any], index: int) -> str:
    if "path" not in raw:
        raise _malformed(index, "missing field `path`")
    path = raw["path"]
    if not isinstance(path, str):
        raise _malformed(index, "`path` must be a string")
    return path


def _segments_path(raw: dict[str, Any], index: int) -> list[str]:
    """An optional path that is a field name or a list of literal field names; ``""``/absent is the root."""
    path = raw.get("path")
    if path is None or path == "":
        return []
    if isinstance(path, str):
        return [path]
    if isinstance(path, list) and all(isinstance(segment, str) for segment in path):
        return list(path)
    raise _malformed(index, "`path` must be a string or a list of strings")


def _required_value(raw: dict[str, Any], index: int) -> Any:
    if "value" not in raw:
        raise _malformed(index, "missing field `value`")
    return raw["value"]


def parse_ops(raw_ops: Any) -> list[Op]:
    """The ops of an update payload; raises ``FunctionError(deserialization_error)`` naming the bad op."""
    if not isinstance(raw_ops, list):
        raise FunctionError(
            DESERIALIZATION_ERROR, "Failed to deserialize input for state::update: `ops` must be a list"
        )
    ops: list[Op] = []
    for index, raw in enumerate(raw_ops):
        if not isinstance(raw, dict):
            raise _malformed(index, "an op must be an object")
        kind = raw.get("type")
        if kind == "set":
            ops.append(SetOp(_field_path(raw, index), raw.get("value")))
        elif kind == "merge":
            ops.append(MergeOp(_segments_path(raw, index), _required_value(raw, index)))
        elif kind in ("increment", "decrement"):
            path = _field_path(raw, index)
            by = raw.get("by")
            if isinstance(by, bool) or not isinstance(by, int):
                raise _malformed(index, "`by` must be an integer")
            ops.append(AddOp(kind, path, by, 1 if kind == "increment" else -1))
        elif kind == "append":
            ops.append(AppendOp(_segments_path(raw, index), _required_value(raw, index)))
        elif kind == "remove":
            ops.append(RemoveOp(_field_path(raw, index)))
        else:
            raise _malformed(index, f"unknown op type {kind!r} (set, merge, increment, decrement, append, remove)")
    return ops


# --- applying ----------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fresh(value: Any) -> Any:
    """A copy of an op's value to put into the result: later ops may change the result in place, and a
    change may be applied again (a retried write), so the op itself must stay as parsed."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _label(segments: list[str]) -> str:
    if not segments:
        return "root"
    return segments[0] if len(segments) == 1 else "[" + ", ".join(segments) + "]"


class _Applier:
    """Applies one update's ops in order, collecting the errors of the ops it skips."""

    def __init__(self, old: Any) -> None:
        self.missing = old is MISSING
        """True while the value is still the stand-in for an absent key (root increments start from 0)."""
        self.value: Any = {} if old is MISSING else old
        self.errors: list[dict[str, Any]] = []

    def fail(self, index: int, code: str, message: str) -> None:
        self.errors.append({"op_index": index, "code": code, "message": message})

    def path_ok(self, name: str, index: int, segments: list[str]) -> bool:
        if len(segments) > MAX_PATH_DEPTH:
            self.fail(index, f"{name}.path.too_deep", f"Path depth {len(segments)} exceeds maximum of {MAX_PATH_DEPTH}")
            return False
        for segment in segments:
            if not segment:
                self.fail(index, f"{name}.path.empty_segment", "Path contains an empty segment")
                return False
            size = len(segment.encode())
            if size > MAX_SEGMENT_BYTES:
                self.fail(
                    index,
                    f"{name}.path.segment_too_long",
                    f"Path segment of {size} bytes exceeds maximum of {MAX_SEGMENT_BYTES}",
                )
                return False
            if segment in FORBIDDEN_SEGMENTS:
                self.fail(index, f"{name}.path.proto_polluted", f"Path segment {segment!r} is not allowed")
                return False
        return True

    def apply(self, index: int, op: Op) -> None:
        if isinstance(op, SetOp):
            self.set(index, op)
        elif isinstance(op, MergeOp):
            self.merge(index, op)
        elif isinstance(op, AddOp):
            self.add(index, op)
        elif isinstance(op, AppendOp):
            self.append(index, op)
        else:
            self.remove(index, op)

    def set(self, index: int, op: SetOp) -> None:
        if not self.path_ok("set", index, [op.path] if op.path else []):
            return
        if not op.path:
            self.value = _fresh(op.value)
        elif isinstance(self.value, dict):
            self.value[op.path] = _fresh(op.value)
        else:
            self.fail(
                index,
                "set.target_not_object",
                f"Cannot set at path {op.path!r}: target is {_type_name(self.value)}, expected object.",
            )
            return
        self.missing = False

    def merge(self, index: int, op: MergeOp) -> None:
        if not self.path_ok("merge", index, op.path):
            return
        value = op.value
        if not isinstance(value, dict):
            self.fail(index, "merge.value.not_an_object", "Merge value must be a JSON object")
            return
        if len(value) > MAX_MERGE_KEYS:
            self.fail(
                index,
                "merge.value.too_many_keys",
                f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_MERGE_KEYS}",
            )
            return
        polluting = next((key for key in value if key in FORBIDDEN_SEGMENTS), None)
        if polluting is not None:
            self.fail(index, "merge.value.proto_polluted", f"Merge value top-level key {polluting!r} is not allowed")
            return
        depth = _depth(value)
        if depth > MAX_MERGE_DEPTH:
            self.fail(
                index,
                "merge.value.too_deep",
                f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_MERGE_DEPTH}",
            )
            return
        if not op.path and not isinstance(self.value, dict):
            self.fail(
                index,
                "merge.target_not_object",
                f"Cannot merge at root: target is {_type_name(self.value)}, expected object.",
            )
            return
        self._walk(op.path).update(_fresh(value))
        self.missing = False

    def _walk(self, segments: list[str]) -> dict[str, Any]:
        """The object at ``segments``, making the root and every step an object where it is not one."""
        if not isinstance(self.value, dict):
            self.value = {}
        node: dict[str, Any] = self.value
        for segment in segments:
            child = node.get(segment)
            if not isinstance(child, dict):
                child = node[segment] = {}
            node = child
        return node

    def add(self, index: int, op: AddOp) -> None:
        if not self.path_ok(op.name, index, [op.path] if op.path else []):
            return
        delta = op.sign * op.by
        if not op.path:
            if self.missing:
                self.value = delta
            elif _is_number(self.value):
                self.value = self.value + delta
            else:
                self.fail(
                    index, f"{op.name}.not_number", f"Expected number at path 'root', got {_type_name(self.value)}."
                )
                return
        elif isinstance(self.value, dict):
            current = self.value.get(op.path, 0)
            if not _is_number(current):
                self.fail(
                    index, f"{op.name}.not_number", f"Expected number at path {op.path!r}, got {_type_name(current)}."
                )
                return
            self.value[op.path] = current + delta
        else:
            self.fail(
                index,
                f"{op.name}.target_not_object",
                f"Cannot {op.name} at path {op.path!r}: target is {_type_name(self.value)}, expected object.",
            )
            return
        self.missing = False

    def append(self, index: int, op: AppendOp) -> None:
        segments = op.path
        if not self.path_ok("append", index, segments):
            return
        if not segments:
            appended = _appended(None if self.missing else self.value, _fresh(op.value))
            if appended is None:
                self._append_mismatch(index, segments, self.value, op.value)
                return
            self.value = appended
        elif not isinstance(self.value, dict):
            self.fail(
                index,
                "append.target_not_object",
                f"Cannot append at path {_label(segments)!r}: target is {_type_name(self.value)}, expected object.",
            )
            return
        else:
            parent = self._walk(segments[:-1])
            leaf = segments[-1]
            if leaf in parent:
                appended = _appended(parent[leaf], _fresh(op.value))
                if appended is None:
                    self._append_mismatch(index, segments, parent[leaf], op.value)
                    return
                parent[leaf] = appended
            elif len(segments) == 1 and isinstance(op.value, str):
                parent[leaf] = op.value  # a missing field starts a string (not for nested paths, as the reference)
            else:
                parent[leaf] = [_fresh(op.value)]
        self.missing = False

    def _append_mismatch(self, index: int, segments: list[str], target: Any, value: Any) -> None:
        if isinstance(target, str):
            message = f"Expected string append value at path {_label(segments)!r}, got {_type_name(value)}."
        else:
            message = (
                f"Cannot append at path {_label(segments)!r}: target is {_type_name(target)}, "
                "expected array, string, null, or missing field."
            )
        self.fail(index, "append.type_mismatch", message)

    def remove(self, index: int, op: RemoveOp) -> None:
        if not self.path_ok("remove", index, [op.path] if op.path else []):
            return
        if not op.path:
            self.value = None
        elif isinstance(self.value, dict):
            self.value.pop(op.path, None)
        else:
            self.fail(
                index,
                "remove.target_not_object",
                f"Cannot remove at path {op.path!r}: target is {_type_name(self.value)}, expected object.",
            )
            return
        self.missing = False


def _appended(target: Any, value: Any) -> Any:
    """``target`` with ``value`` appended, or None when it cannot take it."""
    if isinstance(target, list):
        target.append(value)
        return target
    if isinstance(target, str):
        return target + value if isinstance(value, str) else None
    if target is None:
        return value if isinstance(value, str) else [value]
    return None


def apply_ops(old: Any, ops: list[Op]) -> tuple[Any, list[dict[str, Any]]]:
    """Apply ``ops`` in order to ``old`` (:data:`MISSING` for an absent key): the new value and the errors.

    ``old`` is modified in place where it is a container: pass a copy of anything still needed.
    """
    applier = _Applier(old)
    for index, op in enumerate(ops):
        applier.apply(index, op)
    return applier.value, applier.errors
