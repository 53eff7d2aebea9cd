"""The observer filter language (observe.v1): validation, normal form and evaluation. No I/O.

A filter selects the events an observer receives. It is a JSON object whose keys are paths or the combinators
``$and``, ``$or`` and ``$not``, and whose path values are operator objects::

    {"input.amount": {"$gte": 500}, "caller.function_id": {"$eq": "shop::checkout"}}

A path starts at a root of the event document (``input``, ``output``, ``error``, ``caller``, ``metadata``)
and steps through object members and array elements (``input.items.0.sku``; ``\\.`` and ``\\\\`` escape a dot
and a backslash inside a key). The operators are ``$eq``, ``$ne``, ``$in``, ``$nin`` (JSON equality: numbers
as doubles, no coercion between types), ``$gt``, ``$gte``, ``$lt``, ``$lte`` (a number or a string bound,
compared with values of the same kind only), ``$exists``, ``$prefix`` and ``$any`` (some array element
satisfies an operator object, or a filter over ``@``, the element). A path that resolves to nothing is
*absent*, which only ``$ne``, ``$nin`` and ``$exists: false`` accept; JSON ``null`` is a value.

The official SDKs evaluate the same language for the calls they run in process, so the limits and the error
code (``INVALID_FILTER``) are theirs: a filter rejected here is rejected there. What the engine keeps and
shows is the *normal form*: ``{}`` for "every event", else ``{"$and": [clause, ...]}`` with one clause per
path or combinator, nested ``$and`` flattened.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

MAX_DEPTH: Final = 8
"""Nesting of ``$or``, ``$not`` and ``$any`` (``$and`` adds no level)."""
MAX_NODES: Final = 64
"""Operators, ``$or`` and ``$not`` counted together."""
MAX_SET_ITEMS: Final = 256
MAX_PATH_SEGMENTS: Final = 16
MAX_ENCODED_BYTES: Final = 8192
MAX_SAFE_NUMBER: Final = 2**53
MAX_LITERAL_DEPTH: Final = 32

ROOTS: Final = frozenset({"input", "output", "error", "caller", "metadata"})
VALUE_OPERATORS: Final = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$prefix", "$any"}
)

ABSENT: Final[Any] = object()
"""What a path resolves to when nothing is there."""

Predicate = Callable[[Mapping[str, Any], Any], bool]
"""``predicate(document, element)``: ``element`` is the current ``$any`` element (``@``)."""


class FilterError(ValueError):
    """A filter that is not valid; the observer is refused with ``INVALID_FILTER`` and this message."""

    code: Final = "INVALID_FILTER"


class Filter:
    """A validated filter: its normal form and its predicate."""

    __slots__ = ("_predicate", "normal")

    def __init__(self, normal: dict[str, Any], predicate: Predicate) -> None:
        self.normal = normal
        self._predicate = predicate

    @property
    def matches_everything(self) -> bool:
        return not self.normal

    def matches(self, document: Mapping[str, Any]) -> bool:
        """Whether an event document ``{input?, output?, error?, caller?, metadata?}`` passes (a missing key
        is an absent root). Never raises."""
        try:
            return self._predicate(document, None)
        except Exception:  # a valid filter on any JSON answers; anything else is no match
            return False


def compile_filter(source: Any) -> Filter:
    """Validate ``source`` (None or ``{}`` is "every event") and compile it; :class:`FilterError` if invalid."""
    if source is None:
        source = {}
    if not isinstance(source, dict):
        raise FilterError(f"a filter must be a JSON object, found {_kind(source)}")
    try:
        encoded = json.dumps(source, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FilterError(f"a filter must be JSON: {exc}") from None
    if len(encoded.encode("utf-8", "surrogatepass")) > MAX_ENCODED_BYTES:
        raise FilterError(f"the filter encodes to more than {MAX_ENCODED_BYTES} bytes")
    compiler = _Compiler()
    clauses, predicates = compiler.filter(source, depth=1, in_any=False)
    normal: dict[str, Any] = {"$and": clauses} if clauses else {}
    return Filter(normal, _all_of(predicates))


class _Compiler:
    """One pass over a filter: checks it, builds its normal form and its predicate."""

    def __init__(self) -> None:
        self.nodes = 0

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"more than {MAX_NODES} operator / clause nodes")

    def filter(self, source: Any, depth: int, in_any: bool) -> tuple[list[dict[str, Any]], list[Predicate]]:
        """The clauses (normal form) and predicates of a filter object, ``$and`` flattened."""
        if depth > MAX_DEPTH:
            raise FilterError(f"filters nested deeper than {MAX_DEPTH} levels")
        if not isinstance(source, dict):
            raise FilterError(f"a filter must be a JSON object, found {_kind(source)}")
        clauses: list[dict[str, Any]] = []
        predicates: list[Predicate] = []
        for key, value in source.items():
            if key == "$and":
                for item in _filter_list(key, value):
                    more, preds = self.filter(item, depth, in_any)
                    clauses.extend(more)
                    predicates.extend(preds)
            elif key == "$or":
                self.count()
                branches = [self.filter(item, depth + 1, in_any) for item in _filter_list(key, value)]
                clauses.append({"$or": [_normal(c) for c, _ in branches]})
                predicates.append(_any_of([_all_of(p) for _, p in branches]))
            elif key == "$not":
                self.count()
                if not isinstance(value, dict):
                    raise FilterError(f"`$not` takes a filter object, found {_kind(value)}")
                inner, preds = self.filter(value, depth + 1, in_any)
                clauses.append({"$not": _normal(inner)})
                predicates.append(_none_of(_all_of(preds)))
            elif key in VALUE_OPERATORS:
                raise FilterError(f'`{key}` needs a path: write {{"<path>": {{"{key}": ...}}}}')
            elif key.startswith("$"):
                raise FilterError(f"unknown operator `{key}` (a filter holds paths, `$and`, `$or` and `$not`)")
            else:
                resolve = _path(key, in_any)
                ops = self.operators(key, value, depth)
                clauses.append({key: value})
                predicates.append(_path_clause(resolve, ops))
        return clauses, predicates

    def operators(self, path: str, value: Any, depth: int) -> list[Callable[[Any], bool]]:
        if not isinstance(value, dict) or any(not k.startswith("$") for k in value):
            raise FilterError(
                f'`{path}`: expected an operator object such as {{"$eq": ...}}; literal values are not allowed'
            )
        if not value:
            raise FilterError(f"`{path}`: empty operator object")
        ops = []
        for name, operand in value.items():
            self.count()
            ops.append(self.operator(path, name, operand, depth))
        return ops

    def operator(self, path: str, name: str, operand: Any, depth: int) -> Callable[[Any], bool]:
        def wrong(expected: str) -> FilterError:
            return FilterError(f"`{path}`: `{name}` takes {expected}, found {_kind(operand)}")

        if name in ("$eq", "$ne"):
            _check_literal(path, name, operand)
            if name == "$eq":
                return lambda v: v is not ABSENT and _json_equal(v, operand)
            return lambda v: v is ABSENT or not _json_equal(v, operand)
        if name in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise wrong("an array")
            if len(operand) > MAX_SET_ITEMS:
                raise FilterError(f"`{path}`: `{name}` has {len(operand)} items (limit {MAX_SET_ITEMS})")
            for item in operand:
                _check_literal(path, name, item)
            if name == "$in":
                return lambda v: v is not ABSENT and any(_json_equal(v, item) for item in operand)
            return lambda v: v is ABSENT or not any(_json_equal(v, item) for item in operand)
        if name in ("$gt", "$gte", "$lt", "$lte"):
            accept = _ORDER_TESTS[name]
            if _is_number(operand):
                _check_literal(path, name, operand)
                bound = float(operand)
                return lambda v: _is_number(v) and accept(_order(float(v), bound))
            if isinstance(operand, str):
                return lambda v: isinstance(v, str) and accept(_order(v, operand))
            raise wrong("a number or a string")
        if name == "$exists":
            if not isinstance(operand, bool):
                raise wrong("a boolean")
            return lambda v: (v is not ABSENT) is operand
        if name == "$prefix":
            if not isinstance(operand, str):
                raise wrong("a string")
            return lambda v: isinstance(v, str) and v.startswith(operand)
        if name == "$any":
            return self.any_operator(path, operand, depth)
        if name in ("$and", "$or", "$not"):
            raise FilterError(f"`{path}`: `{name}` combines filters and is not a value operator")
        raise FilterError(f"`{path}`: unknown operator `{name}`")

    def any_operator(self, path: str, operand: Any, depth: int) -> Callable[[Any], bool]:
        """``$any``: an operator object applied to each element, or a filter over ``@``; ``{}`` matches any
        non-empty array."""
        if not isinstance(operand, dict):
            raise FilterError(f"`{path}`: `$any` takes an operator object or a filter over `@`, found {_kind(operand)}")
        if depth + 1 > MAX_DEPTH:
            raise FilterError(f"filters nested deeper than {MAX_DEPTH} levels")
        if operand and all(k in VALUE_OPERATORS for k in operand):
            ops = [self.operator(path, name, value, depth + 1) for name, value in operand.items()]
            for _ in ops:
                self.count()
            return lambda v: isinstance(v, list) and any(_all_ops(ops, item) for item in v)
        _, predicates = self.filter(operand, depth + 1, in_any=True)
        element_filter = _all_of(predicates)
        return lambda v: isinstance(v, list) and any(element_filter({}, item) for item in v)


_ORDER_TESTS: Final[dict[str, Callable[[int], bool]]] = {
    "$gt": lambda c: c > 0,
    "$gte": lambda c: c >= 0,
    "$lt": lambda c: c < 0,
    "$lte": lambda c: c <= 0,
}


def _order(a: Any, b: Any) -> int:
    return -1 if a < b else 1 if a > b else 0


def _all_ops(ops: list[Callable[[Any], bool]], value: Any) -> bool:
    return all(op(value) for op in ops)


def _any_of(alternatives: list[Predicate]) -> Predicate:
    return lambda doc, el: any(alternative(doc, el) for alternative in alternatives)


def _none_of(predicate: Predicate) -> Predicate:
    return lambda doc, el: not predicate(doc, el)


def _path_clause(resolve: Callable[[Mapping[str, Any], Any], Any], ops: list[Callable[[Any], bool]]) -> Predicate:
    return lambda doc, el: _all_ops(ops, resolve(doc, el))


def _all_of(predicates: list[Predicate]) -> Predicate:
    if not predicates:
        return lambda doc, el: True
    if len(predicates) == 1:
        return predicates[0]
    return lambda doc, el: all(p(doc, el) for p in predicates)


def _normal(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"$and": clauses} if clauses else {}


def _filter_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise FilterError(f"`{name}` takes an array of filters, found {_kind(value)}")
    if not value:
        raise FilterError(f"`{name}` takes a non-empty array of filters")
    return value


def _path(raw: str, in_any: bool) -> Callable[[Mapping[str, Any], Any], Any]:
    """Parse a path into its resolver ``(document, element) -> value or ABSENT``."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\":
            escaped = raw[i + 1] if i + 1 < len(raw) else None
            if escaped not in (".", "\\"):
                raise FilterError(f"path `{raw}`: only `\\.` and `\\\\` escapes are allowed")
            current.append(escaped)
            i += 2
            continue
        if char == ".":
            if not current:
                raise FilterError(f"path `{raw}`: empty segment")
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    if not current:
        raise FilterError("empty path" if not raw else f"path `{raw}`: empty segment")
    parts.append("".join(current))
    root, segments = parts[0], parts[1:]
    if in_any and root != "@":
        raise FilterError(f"path `{raw}`: inside `$any` paths start at `@`, the current element")
    if not in_any and root not in ROOTS:
        raise FilterError(f"path `{raw}`: unknown root `{root}` (expected input, output, error, caller or metadata)")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise FilterError(f"path `{raw}`: {len(segments)} segments after the root (limit {MAX_PATH_SEGMENTS})")
    steps = [(segment, _array_index(segment)) for segment in segments]

    def resolve(document: Mapping[str, Any], element: Any) -> Any:
        if root == "@":
            value = element
        elif root in document:
            value = document[root]
        else:
            return ABSENT
        for key, index in steps:
            if isinstance(value, dict):
                value = value.get(key, ABSENT)
                if value is ABSENT:
                    return ABSENT
            elif isinstance(value, list) and index is not None and index < len(value):
                value = value[index]
            else:
                return ABSENT
        return value

    return resolve


def _array_index(segment: str) -> int | None:
    """A canonical decimal (``0``, ``12``; not ``01`` or ``+1``) selects an array element."""
    if segment == "0" or (segment[:1] in "123456789" and segment.isascii() and segment.isdigit()):
        return int(segment) if len(segment) <= 15 else None
    return None


def _check_literal(path: str, name: str, literal: Any) -> None:
    """Numbers within ±2^53 (every implementation reads them alike), nesting within MAX_LITERAL_DEPTH."""
    stack: list[tuple[Any, int]] = [(literal, 0)]
    while stack:
        value, level = stack.pop()
        if _is_number(value):
            if not (math.isfinite(value) and abs(value) <= MAX_SAFE_NUMBER):
                raise FilterError(f"`{path}`: `{name}`: the number {value} is outside ±2^53")
        elif isinstance(value, (list, dict)):
            if level >= MAX_LITERAL_DEPTH:
                raise FilterError(f"`{path}`: `{name}` nests a literal deeper than {MAX_LITERAL_DEPTH} levels")
            members = value.values() if isinstance(value, dict) else value
            stack.extend((member, level + 1) for member in members)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_equal(value: Any, literal: Any) -> bool:
    """JSON equality: numbers as doubles (``1 == 1.0``), no coercion between kinds, key order ignored."""
    if _is_number(literal):
        return _is_number(value) and float(value) == float(literal)
    if isinstance(literal, bool) or literal is None:
        return value is literal
    if isinstance(literal, str):
        return isinstance(value, str) and value == literal
    if isinstance(literal, list):
        return (
            isinstance(value, list)
            and len(value) == len(literal)
            and all(_json_equal(v, item) for v, item in zip(value, literal, strict=True))
        )
    if isinstance(literal, dict):
        return (
            isinstance(value, dict)
            and value.keys() == literal.keys()
            and all(_json_equal(value[k], item) for k, item in literal.items())
        )
    return False


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
