"""Throwaway environments with the official iii SDKs, built on demand under ``build/interop/`` (git-ignored).

Each ``ensure_*`` function is idempotent: it reuses an environment whose marker file says it was completed
with the same specification, and otherwise deletes whatever is there and builds it again from the package
registries (PyPI through pip, npm through npm). A build holds an exclusive file lock, so two pytest runs on
one machine do not build into the same directory at once. Every child process has a timeout; a failed build
raises :class:`EnvironmentBuildError` with the command's output and leaves no marker behind.

Nothing here copies official tests into this repository: the sdist's own tests are downloaded and run in place, and
the official Node SDK tests are read from a clone of the iii repository that the test is given.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_DIR: Final = REPO_ROOT / "build" / "interop"

PYTHON_SDK_VERSION: Final = "0.25.0"
NODE_SDK_VERSION: Final = "0.22.1"
PYTHON_REQUIREMENTS: Final = (f"iii-sdk=={PYTHON_SDK_VERSION}", "pytest", "pytest-asyncio", "anyio", "aiohttp")

NODE_SUITE_TAG: Final = f"iii/v{NODE_SDK_VERSION}"
"""The release of the iii repository whose Node SDK tests :func:`ensure_node_suite` extracts."""
NODE_SUITE_TESTS: Final = "sdk/packages/node/iii/tests"
VITEST_VERSION: Final = "2.1.9"
"""The vitest of the Node SDK's own ``devDependencies`` (``^2.1.0``) at that release."""
NODE_SUITE_CONFIG: Final = Path(__file__).resolve().parent / "node_suite" / "vitest.config.mjs"

PIP_TIMEOUT_S: Final = 900.0
NPM_TIMEOUT_S: Final = 600.0
MARKER_NAME: Final = ".interop-complete.json"


class EnvironmentBuildError(RuntimeError):
    """An environment could not be built; the message carries the failing command and its output."""


@dataclass(frozen=True)
class PythonEnv:
    """A venv with the official Python SDK (``iii-sdk`` from PyPI) and the official tests' test tools."""

    root: Path

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.root / "bin" / "python"


@dataclass(frozen=True)
class Sdist:
    """The extracted PyPI sdist of ``iii-sdk``; ``root/tests`` is the official test suite."""

    root: Path

    @property
    def tests(self) -> Path:
        return self.root / "tests"


@dataclass(frozen=True)
class NodeEnv:
    """An npm project directory with the official Node SDK (``iii-sdk`` from npm) in ``node_modules``."""

    root: Path

    @property
    def package_dir(self) -> Path:
        return self.root / "node_modules" / "iii-sdk"


@dataclass(frozen=True)
class NodeSuite:
    """An npm project with ``iii-sdk@0.22.1`` and vitest, the official Node SDK tests in ``suite/tests`` and
    the vitest configuration that runs them against the installed package."""

    root: Path
    commit: str
    """The commit of the iii repository the tests come from."""

    @property
    def tests(self) -> Path:
        return self.root / "suite" / "tests"

    @property
    def vitest(self) -> Path:
        return self.root / "node_modules" / "vitest" / "vitest.mjs"


@contextmanager
def _build_lock() -> Iterator[None]:
    """Exclusive lock over ``build/interop`` for the duration of a check-or-build."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with (BUILD_DIR / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _marker_matches(directory: Path, spec: dict[str, object]) -> bool:
    marker = directory / MARKER_NAME
    try:
        return bool(json.loads(marker.read_text()) == spec)
    except (OSError, ValueError):
        return False


def _write_marker(directory: Path, spec: dict[str, object]) -> None:
    (directory / MARKER_NAME).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def _run(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None, timeout_s: float) -> str:
    """Run a build command; return its combined output or raise :class:`EnvironmentBuildError`."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = " ".join(str(arg) for arg in argv)
    try:
        completed = subprocess.run(
            [str(arg) for arg in argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode(errors="replace")
        raise EnvironmentBuildError(f"timed out after {timeout_s:.0f} s: {command}\n{output}") from None
    except FileNotFoundError as exc:
        raise EnvironmentBuildError(f"cannot run {command}: {exc}") from None
    if completed.returncode != 0:
        raise EnvironmentBuildError(f"exit code {completed.returncode}: {command}\n{completed.stdout}")
    return completed.stdout


def ensure_python_env() -> PythonEnv:
    """The venv ``build/interop/py-official`` with ``iii-sdk==0.25.0 pytest pytest-asyncio anyio aiohttp``.

    Created with the interpreter that runs pytest (``sys.executable``). Blocks while building (about half a
    minute cold); returns at once when the marker matches. Raises :class:`EnvironmentBuildError`.
    """
    env = PythonEnv(BUILD_DIR / "py-official")
    spec: dict[str, object] = {
        "kind": "python-venv",
        "requirements": list(PYTHON_REQUIREMENTS),
        "base_python": f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}",
    }
    with _build_lock():
        if _marker_matches(env.root, spec) and env.python.exists():
            return env
        shutil.rmtree(env.root, ignore_errors=True)
        _run([sys.executable, "-m", "venv", env.root], timeout_s=120)
        _run(
            [env.python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *PYTHON_REQUIREMENTS],
            timeout_s=PIP_TIMEOUT_S,
        )
        version = _run(
            [env.python, "-c", "import importlib.metadata as m; print(m.version('iii-sdk'))"], timeout_s=60
        ).strip()
        if version != PYTHON_SDK_VERSION:
            raise EnvironmentBuildError(f"expected iii-sdk {PYTHON_SDK_VERSION} in {env.root}, found {version!r}")
        _write_marker(env.root, spec)
        return env


def ensure_python_sdist() -> Sdist:
    """The sdist of ``iii-sdk==0.25.0`` from PyPI, extracted to ``build/interop/sdist/iii_sdk-0.25.0``.

    Downloaded with ``pip download --no-deps --no-binary :all:`` (run by the official venv's pip, which
    :func:`ensure_python_env` builds first). Raises :class:`EnvironmentBuildError`.
    """
    python_env = ensure_python_env()
    container = BUILD_DIR / "sdist"
    sdist = Sdist(container / f"iii_sdk-{PYTHON_SDK_VERSION}")
    spec: dict[str, object] = {"kind": "sdist", "requirement": f"iii-sdk=={PYTHON_SDK_VERSION}"}
    with _build_lock():
        if _marker_matches(container, spec) and (sdist.tests / "test_data_channels.py").exists():
            return sdist
        shutil.rmtree(container, ignore_errors=True)
        container.mkdir(parents=True)
        with tempfile.TemporaryDirectory(dir=BUILD_DIR, prefix="sdist-download-") as download:
            _run(
                [
                    python_env.python,
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-d",
                    download,
                    f"iii-sdk=={PYTHON_SDK_VERSION}",
                ],
                timeout_s=PIP_TIMEOUT_S,
            )
            archives = sorted(Path(download).glob("iii_sdk-*.tar.gz"))
            if len(archives) != 1:
                raise EnvironmentBuildError(f"expected one iii_sdk sdist in {download}, found {archives}")
            with tarfile.open(archives[0]) as archive:
                if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse links and paths out of the tree
                    archive.extractall(container, filter="data")
                else:
                    archive.extractall(container)  # older 3.11: a PyPI sdist of a pinned version
        if not (sdist.tests / "test_data_channels.py").exists():
            raise EnvironmentBuildError(f"the sdist did not extract to {sdist.root} with a tests/ folder")
        _write_marker(container, spec)
        return sdist


def ensure_node_env() -> NodeEnv:
    """The npm project ``build/interop/node`` with exactly ``iii-sdk@0.22.1`` installed.

    Needs ``node`` and ``npm`` on ``PATH``. Raises :class:`EnvironmentBuildError`.
    """
    env = NodeEnv(BUILD_DIR / "node")
    spec: dict[str, object] = {"kind": "npm", "package": f"iii-sdk@{NODE_SDK_VERSION}"}
    with _build_lock():
        if _marker_matches(env.root, spec) and (env.package_dir / "package.json").exists():
            return env
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise EnvironmentBuildError("node and npm must be on PATH to run the Node SDK interop tests")
        shutil.rmtree(env.root, ignore_errors=True)
        env.root.mkdir(parents=True)
        package = {"name": "iii-py-interop", "version": "0.0.0", "private": True, "type": "module"}
        (env.root / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        _run(
            [npm, "install", "--no-audit", "--no-fund", "--save-exact", f"iii-sdk@{NODE_SDK_VERSION}"],
            cwd=env.root,
            timeout_s=NPM_TIMEOUT_S,
        )
        installed = json.loads((env.package_dir / "package.json").read_text())["version"]
        if installed != NODE_SDK_VERSION:
            raise EnvironmentBuildError(f"expected iii-sdk {NODE_SDK_VERSION} in {env.root}, found {installed!r}")
        _write_marker(env.root, spec)
        return env


def _git(repository: Path, *args: str) -> bytes:
    """The output of ``git -C repository args`` (a bare repository or a checkout); raises EnvironmentBuildError."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(repository), *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentBuildError(f"git {' '.join(args)} in {repository} failed: {exc}") from None
    if completed.returncode != 0:
        raise EnvironmentBuildError(
            f"git {' '.join(args)} in {repository}: exit code {completed.returncode}\n"
            f"{completed.stderr.decode(errors='replace')}"
        )
    return completed.stdout


def ensure_node_suite(repository: Path) -> NodeSuite:
    """The npm project ``build/interop/node-suite``: ``iii-sdk@0.22.1`` and ``vitest@2.1.9`` installed, the
    official Node SDK tests of the iii repository's release ``iii/v0.22.1`` (read from ``repository``, a clone
    of the iii repository, bare or not) in ``suite/tests``, and ``node_suite/vitest.config.mjs``.

    The npm package ships no tests, and the tests do not fetch anything: the clone is the only source. Needs
    ``git``, ``node`` and ``npm`` on ``PATH``. Raises :class:`EnvironmentBuildError`.
    """
    commit = _git(repository, "rev-parse", "--verify", f"{NODE_SUITE_TAG}^{{commit}}").decode().strip()
    suite = NodeSuite(BUILD_DIR / "node-suite", commit)
    packages = [f"iii-sdk@{NODE_SDK_VERSION}", f"vitest@{VITEST_VERSION}"]
    spec: dict[str, object] = {
        "kind": "node-suite",
        "packages": packages,
        "tests": f"{NODE_SUITE_TAG} {commit} {NODE_SUITE_TESTS}",
        "config": NODE_SUITE_CONFIG.read_text(),
    }
    with _build_lock():
        if _marker_matches(suite.root, spec) and suite.vitest.exists():
            return suite
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise EnvironmentBuildError("node and npm must be on PATH to run the official Node SDK tests")
        shutil.rmtree(suite.root, ignore_errors=True)
        suite.tests.mkdir(parents=True)
        package = {"name": "iii-py-node-suite", "version": "0.0.0", "private": True, "type": "module"}
        (suite.root / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        _run(
            [npm, "install", "--no-audit", "--no-fund", "--save-exact", *packages],
            cwd=suite.root,
            timeout_s=NPM_TIMEOUT_S,
        )
        listed = _git(repository, "ls-tree", "-r", "--name-only", commit, "--", NODE_SUITE_TESTS).decode()
        for name in listed.splitlines():
            target = suite.tests / Path(name).relative_to(NODE_SUITE_TESTS)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_git(repository, "cat-file", "blob", f"{commit}:{name}"))
        if not (suite.tests / "setup.ts").exists():
            raise EnvironmentBuildError(f"{NODE_SUITE_TESTS} of {NODE_SUITE_TAG} in {repository} has no setup.ts")
        shutil.copy2(NODE_SUITE_CONFIG, suite.root / NODE_SUITE_CONFIG.name)
        _write_marker(suite.root, spec)
        return suite
