"""Fixtures and hooks of the test suite; the helpers they use live in tests/helpers/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.broker import Broker
from helpers.pty import PtyPair, open_pty_pair

os.environ.setdefault("PYTHONUNBUFFERED", "1")


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
