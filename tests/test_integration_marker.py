"""The suite's integration marker: set from the fixtures a test uses, and a unit test that starts a process fails.

Each case runs tests/conftest.py (with tests/helpers/) on a small test file of its own, in this process
(pytester), so ``pytest -m "not integration"`` keeps being a unit run that needs no Mosquitto, socat or root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent

# Stand-ins named like conftest's process fixtures: the marker is set from the name, nothing is started.
FAKE_FIXTURES = """
import asyncio
import os
import subprocess

import pytest


@pytest.fixture
def broker():
    yield "no broker started"


@pytest.fixture
def pty_pair():
    yield "no pty opened"
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(TESTS / "conftest.py", pytester.path / "conftest.py")
    shutil.copytree(TESTS / "helpers", pytester.path / "helpers")
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts a real process\n")
    return pytester


def test_a_test_using_a_process_fixture_is_marked_and_left_out_of_the_unit_run(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_inner=FAKE_FIXTURES
        + """
def test_uses_the_broker(broker):
    pass


def test_uses_a_pty(pty_pair):
    pass


def test_plain():
    pass
"""
    )
    unit = suite.runpytest_inprocess("-m", "not integration", "-p", "no:cacheprovider")
    unit.assert_outcomes(passed=1, deselected=2)
    integration = suite.runpytest_inprocess("-m", "integration", "-p", "no:cacheprovider")
    integration.assert_outcomes(passed=2, deselected=1)


@pytest.mark.parametrize(
    "start",
    [
        'subprocess.run(["true"])',
        'os.system("true")',
        'asyncio.run(asyncio.create_subprocess_exec("true"))',
    ],
)
def test_a_unit_test_that_starts_a_process_fails_even_if_it_catches_the_refusal(
    suite: pytest.Pytester, start: str
) -> None:
    suite.makepyfile(
        test_inner=FAKE_FIXTURES
        + f"""
def test_starts_a_process():
    try:
        {start}
    except Exception:
        pass
"""
    )
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # the refusal fails the test at teardown
    result.stdout.fnmatch_lines(["*test_starts_a_process is not marked integration and started a process*"])


@pytest.mark.integration  # its inner test starts `true`
def test_a_test_marked_integration_may_start_a_process(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_inner=FAKE_FIXTURES
        + """
@pytest.mark.integration
def test_starts_a_process():
    assert subprocess.run(["true"]).returncode == 0
"""
    )
    suite.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
