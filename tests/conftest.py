"""Fixtures and hooks of the test suite; the helpers they use live in tests/helpers/.

An integration test starts a real process (Mosquitto, socat, openssl, tshark, mbpoll, a `gridedge` command, an
interpreter of its own), the simulated bench, or a tmpfs. A test that uses one of ``PROCESS_FIXTURES`` is marked
``integration`` by :func:`pytest_collection_modifyitems`; a test that starts such a thing itself carries the mark
in its module or on itself. Any other test that tries fails: :func:`_unit_tests_start_no_process` refuses the
start and fails the test, so ``pytest -m "not integration"`` stays a fast run of unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.broker import Broker
from helpers.nats import NatsCluster
from helpers.pty import PtyPair, open_pty_pair

os.environ.setdefault("PYTHONUNBUFFERED", "1")

# Fixtures that start a process: conftest's broker and pty_pair, test_mqtt_security.py's brokers and certificates
# (mosquitto, mosquitto_passwd, openssl), test_broker_acl.py's credentials (scripts/site-credentials) and the broker
# its templates configure, test_c37118_tshark.py's dissected capture (tshark).
PROCESS_FIXTURES = frozenset(
    {"broker", "pty_pair", "password_broker", "tls_broker", "pki", "broker_creds", "tshark_offline"}
)
PROCESS_FIXTURES |= {"nats_cluster"}  # three nats-server nodes (tests/helpers/nats.py): the clustered broker tier


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run scripts/install-system-packages.sh (make test does)")
    b = Broker(workdir=tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is not installed: run scripts/install-system-packages.sh (make test does)")
    cluster = NatsCluster(workdir=tmp_path / "nats")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[PtyPair]:
    if shutil.which("socat") is None:
        pytest.fail("socat is not installed: run scripts/install-system-packages.sh (make test does)")
    pair = open_pty_pair(tmp_path)
    try:
        yield pair
    finally:
        pair.proc.terminate()
        pair.proc.wait(5)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """matplotlib (the ``plot`` extra) lists the system's fonts through fontconfig's ``fc-list`` the first time it
    loads on a machine and keeps the list in its cache: that happens here, before any unit test refuses processes,
    so a unit test that draws a plot finds the cache. h5py (pvlib imports it) asks ``platform.processor()``, which
    runs ``uname -p`` once per process and caches the answer: asked here too."""
    with contextlib.suppress(ImportError):
        import matplotlib.font_manager  # noqa: F401
    platform.processor()


# ---- the integration marker: set from the fixtures, enforced for every other test -----------------------------


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


class ProcessInUnitTestError(Exception):
    """A test not marked integration tried to start a process, the bench or a tmpfs."""


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In a test not marked integration, starting a process (subprocess, asyncio, os.fork and its kin) or the
    simulated bench raises, and the test fails even if the code under test caught the error."""
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    tried: list[str] = []

    def refuse(what: str) -> ProcessInUnitTestError:
        tried.append(what)
        return ProcessInUnitTestError(
            f"this test starts {what}: mark it integration (pytest.mark.integration), or use the fixture that "
            f"starts it ({', '.join(sorted(PROCESS_FIXTURES))})"
        )

    def argv(args: tuple, kwargs: dict) -> str:
        cmd = args[0] if args else kwargs.get("args", "?")
        return " ".join(map(str, cmd)) if isinstance(cmd, list | tuple) else str(cmd)

    class RefusedPopen(subprocess.Popen):
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._child_created = False  # Popen.__del__ looks at it
            raise refuse(f"a process ({argv(args, kwargs)})")

    async def refused_exec(*args: object, **kwargs: object) -> None:
        raise refuse(f"a process ({' '.join(map(str, args))})")

    def refused_os(name: str):
        def call(*args: object, **kwargs: object) -> None:
            raise refuse(f"a process (os.{name})")

        return call

    monkeypatch.setattr(subprocess, "Popen", RefusedPopen)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", refused_exec)
    monkeypatch.setattr(asyncio, "create_subprocess_shell", refused_exec)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        monkeypatch.setattr(os, name, refused_os(name))
    bench = sys.modules.get("sim_hw.bench")  # importing it here would load OpenDSS for every test
    if bench is not None:

        async def refused_start(self: object) -> None:
            raise refuse("the simulated bench (Bench.start)")

        monkeypatch.setattr(bench.Bench, "start", refused_start)
    yield
    if tried:
        pytest.fail(f"{request.node.nodeid} is not marked integration and started {tried[0]}", pytrace=False)
