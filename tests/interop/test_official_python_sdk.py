"""The official Python SDK's whole test suite (from the PyPI sdist of ``iii-sdk`` 0.25.0) against our engine.

The sdist ships the SDK's test suite. Its live-engine tests read the engine's worker address from ``III_URL``,
the HTTP trigger address from ``III_HTTP_URL`` and the RBAC worker listener's address from
``III_RBAC_WORKER_URL``; the rest run against fake engines of their own. We run all of it, unchanged, with the
official venv's interpreter in the extracted sdist directory, against one engine started with
``official_suite.toml`` (the engine configuration the official suites expect).

Every test must pass except the short lists below, each entry with its reason:

- :data:`NOT_RUN`: tests that need data files of the iii repository that the sdist does not ship. Permanent.
- :data:`NOT_BUILT`: tests of features this engine does not have yet. They run and must fail
  (``xfail(strict=True)``): one that passes fails this test, so the list shrinks as the features land.

The lists reach the official pytest through ``official_suite_plugin/iii_py_listed_tests.py``, which also stops the
run on an entry that matches no test.

``III_RBAC_WORKER_URL`` is the engine's RBAC worker listener (``--rbac-port 0``), configured by the ``[rbac]`` table
of ``official_suite.toml`` with the auth, hook and middleware functions the suite's RBAC tests register.

While working on one part, ``III_OFFICIAL_TESTS`` runs only the given paths of the suite (space-separated, e.g.
``III_OFFICIAL_TESTS=tests/test_rbac_workers.py``): the listed tests still must fail and nothing else may, but the
totals are not checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv, Sdist
from tests.interop.official_suite_plugin.iii_py_listed_tests import LISTED_ENV
from tests.interop.processes import child_env, engine_complaints, run_once, tail

HERE = Path(__file__).resolve().parent
ENGINE_CONFIG = HERE / "official_suite.toml"
PLUGIN_DIR = HERE / "official_suite_plugin"
PLUGIN = "iii_py_listed_tests"
"""The plugin's module in :data:`PLUGIN_DIR` (it reads the lists from the environment variable ``LISTED_ENV``)."""


def _in(prefix: str, *names: str) -> list[str]:
    """The node ids ``prefix::name`` of ``names``."""
    return [f"{prefix}::{name}" for name in names]


_PDF = "reads the iii repository's test-assets/handbook.pdf, which the sdist does not ship (it skips itself without it)"
NOT_RUN: dict[str, str] = {
    "tests/test_filter_conformance.py": (
        "reads the filter conformance vectors (sdk/fixtures/filters of the iii repository, with the Rust "
        "evaluator's differential corpus) when it is imported; the sdist does not ship them"
    ),
    "tests/test_observe_protocol_fixtures.py": (
        "compares the SDK's observe messages with the JSON files of sdk/fixtures/protocol/observe in the iii "
        "repository, which the sdist does not ship: 34 of its 35 tests read them (the other one, "
        "test_accepts_null_for_optional_fields_and_keeps_unknown_enum_values, goes with its module)"
    ),
    **dict.fromkeys(
        _in("tests/test_api_triggers.py", "test_download_pdf_streaming", "test_upload_pdf_streaming"), _PDF
    ),
    "tests/test_api_triggers.py::test_multipart_form_data": _PDF,
}
"""Tests that cannot run here: they need files the sdist does not ship. A file is not even collected."""

NOT_BUILT: dict[str, str] = {}
"""Tests of features not built yet: each must fail (strict xfail), so an entry goes as soon as its test passes."""

EXPECTED_PASSED = 582
"""Every test the sdist's suite collects here (620, without the filter conformance module, which cannot be
imported) but the 35 + 3 of :data:`NOT_RUN` and those of :data:`NOT_BUILT`."""
EXPECTED_NOT_BUILT = 0
"""None: the last two (engine::log::info at the RBAC port) pass since the observability module."""
EXPECTED_DESELECTED = 3
"""The three PDF tests (the two modules of :data:`NOT_RUN` are not collected, so not counted)."""

SELECTION_ENV = "III_OFFICIAL_TESTS"
"""Space-separated paths of the suite to run instead of all of it (see the module docstring)."""
RUN_TIMEOUT_S = 900.0
"""The whole suite takes about two and a half minutes on two cores (a minute of it is two of the SDK's own unit
tests in test_init_api.py, which take 30 s each without an engine)."""
ENVIRONMENT_TIMEOUT = pytest.mark.timeout(1800)
"""For tests that may build the official environments first (a cold machine downloads from PyPI)."""
_SUMMARY = re.compile(r"^=+ (?P<body>.+?) in [\d.]+s(?: \([^)]*\))? =+$", re.MULTILINE)
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")


def summary_counts(output: str) -> dict[str, int]:
    """The counts of pytest's final summary line (``8 passed, 1 warning in 11.0s``) keyed by outcome."""
    matches = list(_SUMMARY.finditer(output))
    if not matches:
        return {}
    counts: dict[str, int] = {}
    for number, outcome in _COUNT.findall(matches[-1].group("body")):
        key = {"error": "errors", "warning": "warnings"}.get(outcome, outcome)
        counts[key] = counts.get(key, 0) + int(number)
    return counts


def listed_tests_env(not_run: dict[str, str], not_built: dict[str, str]) -> dict[str, str]:
    """The environment that loads the plugin into a child pytest with these lists."""
    return {
        "PYTHONPATH": str(PLUGIN_DIR),
        LISTED_ENV: json.dumps({"not_run": not_run, "must_fail": not_built}),
    }


def official_pytest(python: Path | str, *paths: str) -> list[str]:
    """The command line of the official suite's pytest with the plugin (``-o addopts=``: the sdist's own
    options want pytest-cov)."""
    return [
        str(python),
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-p",
        PLUGIN,
        "-rfEX",
        *paths,
    ]


def test_summary_counts_parses_pytest_summaries() -> None:
    """The summary parser reads the counts pytest prints, so the test below cannot pass on a garbled run."""
    assert summary_counts("x\n============ 8 passed in 11.06s ============\n") == {"passed": 8}
    assert summary_counts("== 6 passed, 1 failed, 2 errors, 1 warning in 3.00s (0:00:03) ==") == {
        "passed": 6,
        "failed": 1,
        "errors": 2,
        "warnings": 1,
    }
    assert summary_counts("== 5 passed, 3 deselected, 46 xfailed in 9.1s ==") == {
        "passed": 5,
        "deselected": 3,
        "xfailed": 46,
    }
    assert summary_counts("no summary") == {}


_TOY_SUITE = {
    "tests/test_ok.py": "def test_ok():\n    pass\n\ndef test_missing_feature():\n    assert False\n",
    "tests/test_data.py": "open('not-shipped.json')\n\ndef test_vectors():\n    pass\n",
    "tests/test_more.py": "def test_needs_a_pdf():\n    assert False\n\ndef test_fine():\n    pass\n",
}


def _run_toy(tmp_path: Path, not_run: dict[str, str], not_built: dict[str, str]) -> tuple[int | None, str]:
    for name, text in _TOY_SUITE.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    code, out, err = run_once(
        official_pytest(sys.executable, "tests"),
        cwd=tmp_path,
        env={**env, **listed_tests_env(not_run, not_built)},
        timeout_s=120,
    )
    return code, out + err


_TOY_NOT_RUN = {"tests/test_data.py": "data", "tests/test_more.py::test_needs_a_pdf": "pdf"}


def test_listed_tests_are_left_out_or_must_fail(tmp_path: Path) -> None:
    """Proves the plugin's two lists: a not-run file is not imported and a not-run node is deselected; a
    not-built test that fails is an expected failure, and the run passes."""
    code, out = _run_toy(tmp_path, _TOY_NOT_RUN, {"tests/test_ok.py::test_missing_feature": "not built"})
    assert code == 0, out
    assert summary_counts(out) == {"passed": 2, "deselected": 1, "xfailed": 1}, out


def test_a_listed_test_that_passes_fails_the_run(tmp_path: Path) -> None:
    """Proves the list stays honest: a test listed as not built that passes fails the run (strict xfail)."""
    code, out = _run_toy(tmp_path, _TOY_NOT_RUN, {"tests/test_ok.py": "not built"})
    assert code == 1, out
    assert summary_counts(out) == {"failed": 1, "passed": 1, "deselected": 1, "xfailed": 1}, out
    assert "XPASS(strict)" in out


@pytest.mark.parametrize(
    ("not_run", "not_built", "stale"),
    [
        ({**_TOY_NOT_RUN, "tests/test_gone.py": "data"}, {}, "tests/test_gone.py"),
        (_TOY_NOT_RUN, {"tests/test_ok.py::test_renamed": "not built"}, "tests/test_ok.py::test_renamed"),
        (
            {**_TOY_NOT_RUN, "tests/test_more.py::test_needs_a_jpeg": "jpeg"},
            {},
            "tests/test_more.py::test_needs_a_jpeg",
        ),
    ],
)
def test_a_stale_entry_stops_the_run(
    tmp_path: Path, not_run: dict[str, str], not_built: dict[str, str], stale: str
) -> None:
    """Proves an entry that matches no test (a file that is gone, a test that was renamed) is an error, not a
    silent no-op."""
    code, out = _run_toy(tmp_path, not_run, not_built)
    assert code == 4, out  # pytest's usage error
    assert stale in out, out


@ENVIRONMENT_TIMEOUT
def test_the_official_python_sdk_suite_passes_but_the_listed_tests(
    official_python: PythonEnv, official_sdist: Sdist
) -> None:
    """Proves the unchanged official Python SDK works against our engine, judged by its whole test suite.

    Its tests against a live engine cover functions and invocations (a 30 MiB non-ASCII payload among them),
    channels, custom trigger types and their lifecycle, HTTP triggers (bodies, forms, server-sent events, status
    codes, middleware), HTTP-invoked functions (webhooks on this machine), state, pub/sub, observers (observe.v1:
    routed and in-process calls, owner delivery, filters, reconnects, the loop guard), the RBAC worker listener
    (auth function, hooks, middleware, exposed functions, prefixes), worker metadata and registration; the others
    test the SDK alone. All but the listed ones must pass (exactly :data:`EXPECTED_PASSED`), none may fail, error
    or be skipped, every test of :data:`NOT_BUILT` must fail, and the engine must log no warning or error
    meanwhile.
    """
    selected = os.environ.get(SELECTION_ENV, "").split()
    with EngineProcess(["--config", str(ENGINE_CONFIG), "--rbac-port", "0"]) as engine:
        extra = {
            "PYTHONDONTWRITEBYTECODE": "1",
            "III_HTTP_URL": engine.http_url,
            "III_RBAC_WORKER_URL": engine.rbac_url,
            **listed_tests_env(NOT_RUN, NOT_BUILT),
        }
        code, out, err = run_once(
            official_pytest(official_python.python, *(selected or ["tests"])),
            cwd=official_sdist.root,
            env=child_env(engine, extra),
            timeout_s=RUN_TIMEOUT_S,
        )
        print(out)  # shown with -rP, and by pytest on failure
        counts = summary_counts(out)
        report = (
            f"official tests exited {code} with {counts}\n--- stdout:\n{tail(out, 200)}\n--- stderr:\n{tail(err)}\n"
            f"--- engine log:\n{tail(engine.log_text(), 60)}"
        )
        assert code == 0, report
        assert not {key for key in counts if key not in ("passed", "xfailed", "deselected", "warnings")}, report
        assert not engine_complaints(engine), report
        if not selected:
            assert counts.get("passed") == EXPECTED_PASSED, report
            assert counts.get("xfailed", 0) == EXPECTED_NOT_BUILT, report
            assert counts.get("deselected") == EXPECTED_DESELECTED, report


@ENVIRONMENT_TIMEOUT
def test_official_venv_has_the_pinned_sdk(official_python: PythonEnv) -> None:
    """Proves the venv runs PyPI ``iii-sdk`` 0.25.0 (not our package, which is also imported as ``iii``)."""
    probe = "import importlib.metadata as m, iii; print(m.version('iii-sdk')); print(iii.__file__)"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [str(official_python.python), "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    version, location = completed.stdout.split()
    assert version == "0.25.0"
    assert str(official_python.root) in location
