"""The RBAC listener's decisions, without sockets: which functions a worker may call and see.

A worker admitted on the RBAC port may call (and see, in ``engine::functions::list``) a function when, in this
order:

1. the auth function did not forbid it (``forbidden_functions``, exact ids): a denial wins over everything below;
2. the auth function allowed it: ``allowed_functions`` (exact ids) or the ``default`` entry of ``namespaces``
   (exact ids or globs, bare or as ``match("...")``);
3. it is one of the infrastructure functions every SDK calls on its own (:data:`INFRASTRUCTURE_FUNCTIONS`);
4. a rule of the ``[rbac]`` table's ``expose_functions`` matches it.

Anything else is refused. Rules of ``expose_functions`` (an array of the TOML file, as the reference's YAML list):

* ``'match("api::*")'`` (or ``match('...')``): functions whose id matches the glob;
* ``{ match = "api::*" }``: the same, as a table;
* ``{ metadata = { public = true, tier = 'match("free-*")' } }``: functions whose registered metadata has every
  key given, with an equal JSON value (``true`` is not ``1``), or a string matching a ``match("...")`` glob;
* a table may also name a ``namespace``: this engine has only ``default``, so a rule for another matches nothing.

Globs have one special character, ``*``: any run of characters, ``::`` included. They are matched without
backtracking, so a hostile function id cannot make a check slow.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_NAMESPACE: Final = "default"

INFRASTRUCTURE_FUNCTIONS: Final = frozenset(
    {
        "engine::channels::create",
        "engine::channels::release",
        "engine::workers::register",
        "engine::log::info",
        "engine::log::warn",
        "engine::log::error",
        "engine::log::debug",
        "engine::log::trace",
        "engine::baggage::get",
        "engine::baggage::set",
        "engine::baggage::get_all",
    }
)
"""Functions the SDKs call by themselves (describing the worker, channels, logging, baggage): every admitted
worker may call them unless the auth function forbids them by name. The reference's list, and our
``engine::channels::release`` (our SDK releases the channel ends a handler left unused)."""


def glob_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern``, where ``*`` stands for any run of characters.

    The text between stars must appear in order, the first piece at the start and the last at the end; each
    piece is looked for once, leftmost, which is enough for stars alone (no backtracking).
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return pattern == value
    first, *middle, last = pieces
    end = len(value) - len(last)
    if end < len(first) or not value.startswith(first) or not value.endswith(last):
        return False
    position = len(first)
    for piece in middle:
        if not piece:
            continue
        found = value.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def unwrap_match(text: str) -> str | None:
    """The pattern of ``match("...")`` or ``match('...')`` (None if ``text`` is not one)."""
    stripped = text.strip()
    for quote in ('"', "'"):
        opening, closing = f"match({quote}", f"{quote})"
        if stripped.startswith(opening) and stripped.endswith(closing) and len(stripped) >= len(opening + closing):
            return stripped[len(opening) : -len(closing)]
    return None


def grant_matches(grant: str, function_id: str) -> bool:
    """Whether a grant of the auth function's ``namespaces`` (an id, or a glob bare or wrapped) covers
    ``function_id``."""
    pattern = unwrap_match(grant)
    raw = grant if pattern is None else pattern
    return raw == function_id or ("*" in raw and glob_match(raw, function_id))


def json_equal(expected: Any, actual: Any) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python's ``True == 1`` is), numbers compare by value."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(json_equal(expected[k], actual[k]) for k in expected)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(json_equal(e, a) for e, a in zip(expected, actual, strict=True))
    return type(expected) is type(actual) and bool(expected == actual)


@dataclass(frozen=True, slots=True)
class MetadataCondition:
    """One key of a metadata rule: an exact JSON value, or a glob a string value must match."""

    value: Any = None
    pattern: str | None = None

    def matches(self, actual: Any) -> bool:
        if self.pattern is not None:
            return isinstance(actual, str) and glob_match(self.pattern, actual)
        return json_equal(self.value, actual)


@dataclass(frozen=True, slots=True)
class ExposeRule:
    """One rule of ``expose_functions``: a glob on the function id, or conditions on its metadata."""

    pattern: str | None = None
    metadata: Mapping[str, MetadataCondition] = field(default_factory=dict)
    namespace: str = DEFAULT_NAMESPACE

    def matches(self, function_id: str, metadata: Any) -> bool:
        if self.namespace != DEFAULT_NAMESPACE:
            return False
        if self.pattern is not None:
            return glob_match(self.pattern, function_id)
        if not isinstance(metadata, dict):
            return False
        return all(key in metadata and condition.matches(metadata[key]) for key, condition in self.metadata.items())

    def describe(self) -> Any:
        """The rule as it would be written in the TOML file (for the console)."""
        if self.pattern is not None and self.namespace == DEFAULT_NAMESPACE:
            return f'match("{self.pattern}")'
        described: dict[str, Any] = {}
        if self.pattern is not None:
            described["match"] = self.pattern
        else:
            described["metadata"] = {
                key: f'match("{c.pattern}")' if c.pattern is not None else c.value for key, c in self.metadata.items()
            }
        if self.namespace != DEFAULT_NAMESPACE:
            described["namespace"] = self.namespace
        return described


def parse_rule(item: Any, where: str) -> ExposeRule:
    """One entry of ``expose_functions``; ``ValueError`` naming ``where`` for anything else."""
    if isinstance(item, ExposeRule):
        return item
    if isinstance(item, str):
        pattern = unwrap_match(item)
        if pattern is None:
            raise ValueError(f'{where}: expected match("pattern") or a table, got {item!r}')
        return ExposeRule(pattern=pattern)
    if not isinstance(item, dict):
        raise ValueError(f'{where}: expected match("pattern") or a table, got {type(item).__name__}')
    unknown = sorted(set(item) - {"match", "metadata", "namespace"})
    if unknown:
        # A misspelt key would otherwise leave a rule broader or narrower than meant: say so instead.
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (a rule has match or metadata, and namespace)")
    namespace = item.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise ValueError(f"{where}: namespace must be a non-empty string")
    if ("match" in item) == ("metadata" in item):
        raise ValueError(f"{where}: a rule has either match or metadata")
    if "match" in item:
        raw = item["match"]
        if not isinstance(raw, str) or not raw:
            raise ValueError(f"{where}: match must be a non-empty string")
        return ExposeRule(pattern=unwrap_match(raw) or raw, namespace=namespace)
    conditions = item["metadata"]
    if not isinstance(conditions, dict) or not conditions:
        raise ValueError(f"{where}: metadata must be a table with at least one key")
    parsed = {}
    for key, value in conditions.items():
        pattern = unwrap_match(value) if isinstance(value, str) else None
        parsed[str(key)] = MetadataCondition(pattern=pattern) if pattern is not None else MetadataCondition(value)
    return ExposeRule(metadata=parsed, namespace=namespace)


def parse_rules(items: Any) -> tuple[ExposeRule, ...]:
    """``expose_functions`` as rules; ``ValueError`` naming the entry that is not one."""
    if not isinstance(items, list | tuple):
        raise ValueError(f"expose_functions must be an array of rules, got {type(items).__name__}")
    return tuple(parse_rule(item, f"expose_functions[{index}]") for index, item in enumerate(items))


def _strings(result: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = result.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key} must be a list of strings")
    return tuple(value)


def _flag(result: Mapping[str, Any], key: str, default: bool) -> bool:
    value = result.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Grants:
    """What the auth function's answer (the SDKs' ``AuthResult``) gives one worker. The defaults are the
    ``AuthResult``'s: an auth function that says nothing else allows no function beyond ``expose_functions``,
    function registrations but no trigger types, and triggers of any type."""

    allowed_functions: frozenset[str] = frozenset()
    forbidden_functions: frozenset[str] = frozenset()
    namespace_grants: tuple[str, ...] = ()
    """The ``default`` entry of ``namespaces`` (the only namespace of this engine)."""
    allowed_trigger_types: frozenset[str] | None = None
    """None: any type."""
    allow_trigger_type_registration: bool = False
    allow_function_registration: bool = True
    function_registration_prefix: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_auth_result(cls, result: Any) -> Grants:
        """The grants an auth function answered (a JSON object; absent or null fields take their defaults);
        ``ValueError`` naming the field that has the wrong type."""
        if not isinstance(result, dict):
            raise ValueError(f"the answer must be an object (AuthResult), got {type(result).__name__}")
        namespaces = result.get("namespaces") or {}
        if not isinstance(namespaces, dict):
            raise ValueError("namespaces must be an object of lists of function ids")
        types = (
            None
            if result.get("allowed_trigger_types") is None
            else frozenset(_strings(result, "allowed_trigger_types"))
        )
        prefix = result.get("function_registration_prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise ValueError("function_registration_prefix must be a non-empty string")
        context = result.get("context")
        if context is None:
            context = {}
        if not isinstance(context, dict):
            raise ValueError(f"context must be an object, got {type(context).__name__}")
        return cls(
            allowed_functions=frozenset(_strings(result, "allowed_functions")),
            forbidden_functions=frozenset(_strings(result, "forbidden_functions")),
            namespace_grants=_strings(namespaces, DEFAULT_NAMESPACE),
            allowed_trigger_types=types,
            allow_trigger_type_registration=_flag(result, "allow_trigger_type_registration", False),
            allow_function_registration=_flag(result, "allow_function_registration", True),
            function_registration_prefix=prefix,
            context=context,
        )


OPEN: Final = Grants(allow_trigger_type_registration=True)
"""What a worker gets when no auth function is configured (as in the reference): no grants beyond
``expose_functions``, and it may register functions, trigger types and triggers."""


class Verdict(enum.Enum):
    """Whether a worker may call (and see) a function, and if not, why."""

    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"
    """The auth function forbade it by name."""
    NOT_EXPOSED = "not_exposed"
    """Nothing allows it."""


def decide(function_id: str, metadata: Any, grants: Grants, expose: tuple[ExposeRule, ...]) -> Verdict:
    """The verdict for one function (``metadata``: its registered metadata, None if it has none or does not
    exist): the order of the module docstring."""
    if function_id in grants.forbidden_functions:
        return Verdict.FORBIDDEN
    if function_id in grants.allowed_functions or any(grant_matches(g, function_id) for g in grants.namespace_grants):
        return Verdict.ALLOWED
    if function_id in INFRASTRUCTURE_FUNCTIONS:
        return Verdict.ALLOWED
    if any(rule.matches(function_id, metadata) for rule in expose):
        return Verdict.ALLOWED
    return Verdict.NOT_EXPOSED
