"""The route table of the ``http`` trigger type: ``api_path`` patterns with ``:param`` segments.

A pattern is a path of segments; a segment that starts with ``:`` (or is written ``{name}``) captures
one path segment under that name. Leading, trailing and repeated slashes do not matter. When several
routes of one method match a path, the one whose literal segments come first wins, so ``/users/me``
is chosen over ``/users/:id`` whatever the order they were bound in. Two routes of one method with the
same shape (``/a/:x`` and ``/a/:y``) conflict: the second is refused. A ``HEAD`` request is served by the
``GET`` route of its path unless a ``HEAD`` route is bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

METHODS: Final = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))


class RouteError(ValueError):
    """An ``http`` trigger config that cannot be served (the message says why)."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed ``api_path``: its segments, with ``None`` where a parameter goes."""

    path: str
    """The normalized pattern, as functions see it in ``trigger.path`` (``/users/:id``)."""
    literals: tuple[str | None, ...]
    params: tuple[str, ...]
    """Parameter names, in the order of their segments."""

    @property
    def shape(self) -> tuple[str | None, ...]:
        return self.literals

    @property
    def rank(self) -> tuple[int, ...]:
        """Sorts more specific patterns first: a literal segment beats a parameter at the same place."""
        return tuple(0 if segment is not None else 1 for segment in self.literals)


def parse_pattern(api_path: object) -> Pattern:
    """Parse an ``api_path``; raises :class:`RouteError` for a missing or malformed one."""
    if not isinstance(api_path, str) or not api_path.strip():
        raise RouteError("an http trigger needs 'api_path', a non-empty string such as '/users/:id'")
    literals: list[str | None] = []
    params: list[str] = []
    shown: list[str] = []
    for segment in _segments(api_path.strip()):
        name = None
        if segment.startswith(":"):
            name = segment[1:]
        elif segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
        if name is None:
            literals.append(segment)
            shown.append(segment)
            continue
        if not name.isidentifier():
            raise RouteError(f"api_path {api_path!r}: parameter {segment!r} needs a name of letters, digits and _")
        if name in params:
            raise RouteError(f"api_path {api_path!r}: parameter {name!r} appears twice")
        literals.append(None)
        params.append(name)
        shown.append(":" + name)
    return Pattern("/" + "/".join(shown), tuple(literals), tuple(params))


def parse_method(http_method: object) -> str:
    """The upper-case method of a config (``GET`` when absent); raises :class:`RouteError` otherwise."""
    if http_method is None:
        return "GET"
    method = http_method.upper() if isinstance(http_method, str) else ""
    if method not in METHODS:
        raise RouteError(f"http_method must be one of {', '.join(sorted(METHODS))}, got {http_method!r}")
    return method


def parse_middleware(middleware_function_ids: object) -> tuple[str, ...]:
    """The ``middleware_function_ids`` of a config (none when absent), in the order they run; raises
    :class:`RouteError` for anything but a list of non-empty strings."""
    if middleware_function_ids is None:
        return ()
    if not isinstance(middleware_function_ids, list) or not all(
        isinstance(function_id, str) and function_id for function_id in middleware_function_ids
    ):
        raise RouteError(
            f"middleware_function_ids must be a list of function ids, got {middleware_function_ids!r:.200}"
        )
    return tuple(middleware_function_ids)


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


@dataclass(slots=True, eq=False)
class Route:
    """One bound route: which binding it serves and what to call."""

    binding_id: str
    method: str
    pattern: Pattern
    function_id: str
    metadata: Any = None
    """The binding's metadata (decoded JSON), delivered with every call."""
    middleware: tuple[str, ...] = ()
    """Functions called in this order before ``function_id``; each may answer the request instead."""


@dataclass(slots=True)
class Match:
    route: Route
    path_params: dict[str, str]


@dataclass(slots=True)
class WrongMethod:
    """The path exists, but not for this method."""

    allowed: list[str]


@dataclass(slots=True)
class _Bucket:
    """The routes of one method and one segment count, most specific first."""

    routes: list[Route] = field(default_factory=list)

    def add(self, route: Route) -> None:
        self.routes.append(route)
        self.routes.sort(key=lambda r: r.pattern.rank)


class RouteTable:
    """All routes of the ``http`` trigger type, by binding id, matched by method and path."""

    def __init__(self) -> None:
        self._by_binding: dict[str, Route] = {}
        self._buckets: dict[tuple[str, int], _Bucket] = {}

    def __len__(self) -> int:
        return len(self._by_binding)

    def routes(self) -> list[Route]:
        return list(self._by_binding.values())

    def add(self, route: Route) -> Route | None:
        """Add ``route``; returns the route it conflicts with (and adds nothing) if there is one."""
        key = (route.method, len(route.pattern.literals))
        for existing in self._buckets.get(key, _Bucket()).routes:
            if existing.pattern.shape == route.pattern.shape and existing.binding_id != route.binding_id:
                return existing
        self.remove(route.binding_id)
        self._buckets.setdefault(key, _Bucket()).add(route)
        self._by_binding[route.binding_id] = route
        return None

    def remove(self, binding_id: str) -> Route | None:
        route = self._by_binding.pop(binding_id, None)
        if route is not None:
            key = (route.method, len(route.pattern.literals))
            bucket = self._buckets[key]
            bucket.routes.remove(route)
            if not bucket.routes:
                del self._buckets[key]
        return route

    def match(self, method: str, raw_path: str) -> Match | WrongMethod | None:
        """The route for a request (``raw_path`` still percent-encoded), or why there is none."""
        segments = _segments(raw_path)
        found = self._match_in(method, segments)
        if found is None and method == "HEAD":
            found = self._match_in("GET", segments)  # HEAD is GET without the body (RFC 9110, 9.3.2)
        if found is not None:
            return found
        allowed = {
            other
            for other in METHODS
            if (other, len(segments)) in self._buckets and self._match_in(other, segments) is not None
        }
        if "GET" in allowed:
            allowed.add("HEAD")
        allowed.discard(method)
        return WrongMethod(sorted(allowed)) if allowed else None

    def _match_in(self, method: str, segments: list[str]) -> Match | None:
        bucket = self._buckets.get((method, len(segments)))
        if bucket is None:
            return None
        for route in bucket.routes:
            params: dict[str, str] = {}
            names = iter(route.pattern.params)
            for literal, segment in zip(route.pattern.literals, segments, strict=True):
                if literal is None:
                    params[next(names)] = unquote(segment)
                elif literal != unquote(segment):
                    break
            else:
                return Match(route, params)
        return None
