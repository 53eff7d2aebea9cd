"""The official Python SDK's own tests (from the PyPI sdist of ``iii-sdk`` 0.25.0) pass against our engine.

The sdist ships the SDK's test suite; its live-engine tests read the engine address from ``III_URL`` and the
HTTP trigger address from ``III_HTTP_URL``. We run the modules that exercise what this engine offers
(functions, invocation, channels, trigger types, HTTP middleware, and the state and pub/sub modules) with
the official venv's interpreter, unchanged, in the extracted sdist directory. The sdist has no cron test
against a live engine (its two cron mentions are registrations sent to a fake socket);
``test_official_modules.py`` drives cron with the official SDKs.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv, Sdist
from tests.interop.processes import child_env, engine_complaints, run_once, tail

OFFICIAL_MODULES = (
    "tests/test_data_channels.py",
    "tests/test_bridge.py",
    "tests/test_trigger_type_lifecycle.py",
    "tests/test_middleware.py",
    "tests/test_state.py",
    "tests/test_pubsub.py",
)
EXPECTED_PASSED = 29
"""2 channel tests (one-way and bidirectional streaming) + 6 bridge tests (connect, register and invoke,
a 30 MiB non-ASCII payload round trip, fire-and-forget, function listing, unknown function) + 3 trigger type
lifecycle tests + 5 HTTP middleware tests (continue, respond, order, input, none) + 11 state tests (set new
and overwrite, get present and missing, delete present and missing, list, list_groups, update with set ops
and with append ops, a ``state`` trigger firing on an update) + 2 pub/sub tests (a subscriber receives a
published message; topics are isolated)."""

RUN_TIMEOUT_S = 300.0
ENVIRONMENT_TIMEOUT = pytest.mark.timeout(1200)
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


def test_summary_counts_parses_pytest_summaries() -> None:
    """The summary parser reads the counts pytest prints, so the test below cannot pass on a garbled run."""
    assert summary_counts("x\n============ 8 passed in 11.06s ============\n") == {"passed": 8}
    assert summary_counts("== 6 passed, 1 failed, 2 errors, 1 warning in 3.00s (0:00:03) ==") == {
        "passed": 6,
        "failed": 1,
        "errors": 2,
        "warnings": 1,
    }
    assert summary_counts("no summary") == {}


@ENVIRONMENT_TIMEOUT
def test_official_python_sdk_channel_bridge_trigger_type_middleware_state_and_pubsub_tests_pass(
    engine: EngineProcess, official_python: PythonEnv, official_sdist: Sdist
) -> None:
    """Proves the unchanged official Python SDK works against our engine, judged by its own tests.

    ``test_data_channels.py`` streams records from a sender to a processor and runs the bidirectional
    progress example through engine channels; ``test_trigger_type_lifecycle.py`` has a provider worker of a
    custom trigger type receive, lose and regain the binding of a consumer worker; ``test_bridge.py``
    connects, registers and invokes functions (request/response and void), echoes a 30 MiB non-ASCII
    payload, lists functions and gets ``function_not_found`` for an unknown one; ``test_middleware.py`` binds
    HTTP routes with ``middleware_function_ids`` and checks over HTTP that middleware runs in order with the
    request's method and parameters, lets the request through (``continue``) or answers it (``respond`` 403,
    the handler never called); ``test_state.py`` calls every ``state::*`` function and binds a ``state``
    trigger to one key; ``test_pubsub.py`` publishes to topics with ``subscribe`` bindings. All 29 must pass,
    none may fail, error or be skipped, and the engine must log no warning or error meanwhile.
    """
    argv = [str(official_python.python), "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-v"]
    code, out, err = run_once(
        [*argv, *OFFICIAL_MODULES],
        cwd=official_sdist.root,
        env=child_env(engine, {"PYTHONDONTWRITEBYTECODE": "1", "III_HTTP_URL": engine.http_url}),
        timeout_s=RUN_TIMEOUT_S,
    )
    print(out)  # shown with -rP, and by pytest on failure
    counts = summary_counts(out)
    report = (
        f"official tests exited {code} with {counts}\n--- stdout:\n{tail(out, 200)}\n--- stderr:\n{tail(err)}\n"
        f"--- engine log:\n{tail(engine.log_text(), 60)}"
    )
    assert code == 0, report
    assert counts.get("passed") == EXPECTED_PASSED, report
    assert not {key for key in counts if key not in ("passed", "warnings")}, report
    assert not engine_complaints(engine), report


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
