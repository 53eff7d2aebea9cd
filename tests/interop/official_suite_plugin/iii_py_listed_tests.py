"""A pytest plugin that applies our list of official tests that cannot pass against this engine.

Loaded into the official suite's pytest (``-p iii_py_listed_tests``, with this directory on ``PYTHONPATH``;
it is alone here so that nothing else of ours can shadow the suite's own modules). The list comes as JSON in
the environment variable :data:`LISTED_ENV`: ``{"not_run": {key: reason}, "must_fail": {key: reason}}``, where a
key is a node id (``tests/test_x.py::test_y``) or a test file (``tests/test_x.py``: every test in it).

- ``not_run``: a file is not collected at all (a module that cannot even be imported here), a node is
  deselected.
- ``must_fail``: each test is marked ``xfail(strict=True)``, so one that passes fails the run: the entry must
  then leave the list.

A key that matches nothing (a file that does not exist, or a node id not collected from its file) stops the run
with a usage error, so a stale entry cannot hide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

LISTED_ENV = "III_PY_LISTED_TESTS"
_LISTED_KEY = pytest.StashKey[tuple[dict[str, str], dict[str, str]]]()


def _listed(config: pytest.Config) -> tuple[dict[str, str], dict[str, str]]:
    """The ``not_run`` and ``must_fail`` entries (empty without the environment variable)."""
    cached = config.stash.get(_LISTED_KEY, None)
    if cached is None:
        raw = json.loads(os.environ.get(LISTED_ENV, "{}"))
        unknown = sorted(set(raw) - {"not_run", "must_fail"})
        if unknown:
            raise pytest.UsageError(f"{LISTED_ENV}: unknown lists {unknown}")
        cached = (dict(raw.get("not_run", {})), dict(raw.get("must_fail", {})))
        config.stash[_LISTED_KEY] = cached
    return cached


def _covers(key: str, nodeid: str) -> bool:
    return nodeid == key or nodeid.startswith(key + "::")


def pytest_configure(config: pytest.Config) -> None:
    not_run, must_fail = _listed(config)
    missing = [key for key in [*not_run, *must_fail] if not (config.rootpath / key.split("::")[0]).is_file()]
    if missing:
        raise pytest.UsageError(f"listed tests in files that do not exist: {missing}")
    both = sorted(set(not_run) & set(must_fail))
    if both:
        raise pytest.UsageError(f"tests listed both as not run and as must fail: {both}")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    not_run, _ = _listed(config)
    files = {config.rootpath / key for key in not_run if "::" not in key}
    return True if collection_path in files else None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    not_run, must_fail = _listed(config)
    node_keys = [key for key in not_run if "::" in key]
    matched: set[str] = set()
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        dropped = [key for key in node_keys if _covers(key, item.nodeid)]
        if dropped:
            matched.update(dropped)
            deselected.append(item)
            continue
        for key, reason in must_fail.items():
            if _covers(key, item.nodeid):
                matched.add(key)
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
        kept.append(item)
    collected = {item.nodeid.split("::")[0] for item in items}
    stale = sorted(key for key in {*node_keys, *must_fail} - matched if key.split("::")[0] in collected)
    if stale:
        raise pytest.UsageError(f"listed tests that were not collected: {stale}")
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
