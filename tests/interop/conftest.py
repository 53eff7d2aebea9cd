"""Fixtures of the interop tests: the official SDK environments, built once per machine and reused."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from iii import III, register_worker
from iii.testing import EngineProcess
from tests.interop.environments import (
    NodeEnv,
    PythonEnv,
    Sdist,
    ensure_node_env,
    ensure_python_env,
    ensure_python_sdist,
)

NODE_SCRIPTS = Path(__file__).resolve().parent / "node"
"""The Node scripts of these tests (copied next to ``node_modules`` so ``import 'iii-sdk'`` resolves)."""


@pytest.fixture(scope="session")
def official_python() -> PythonEnv:
    """The venv with PyPI ``iii-sdk==0.25.0`` (built on first use)."""
    return ensure_python_env()


@pytest.fixture(scope="session")
def official_sdist() -> Sdist:
    """The extracted PyPI sdist of ``iii-sdk`` 0.25.0, whose ``tests/`` are the official suite."""
    return ensure_python_sdist()


@pytest.fixture(scope="session")
def node_env() -> NodeEnv:
    """The npm project with ``iii-sdk@0.22.1`` (built on first use)."""
    return ensure_node_env()


@pytest.fixture(scope="session")
def node_scripts(node_env: NodeEnv) -> Iterator[Path]:
    """A fresh copy of ``tests/interop/node/*.mjs`` inside the npm project, removed after the session.

    Node resolves ``import 'iii-sdk'`` from the importing file's real location, so the scripts must live
    under the npm project; they are copied, not linked (one private copy per session).
    """
    target = Path(tempfile.mkdtemp(prefix="scripts-", dir=node_env.root))
    try:
        for script in NODE_SCRIPTS.glob("*.mjs"):
            shutil.copy2(script, target / script.name)
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[III]:
    """A worker of our SDK on the test's engine, for the test's own calls (``engine::*`` queries, triggers)."""
    iii = register_worker(engine.url)
    try:
        yield iii
    finally:
        iii.shutdown()
