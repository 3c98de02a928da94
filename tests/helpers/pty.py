"""Two linked pseudo-terminals made by socat, like the two ends of an RS-485 cable (conftest.py's ``pty_pair``)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PtyPair:
    """Two linked pseudo-terminals, like the two ends of an RS-485 cable."""

    a: str
    b: str
    proc: subprocess.Popen


def open_pty_pair(workdir: Path, name: str = "bus") -> PtyPair:
    a, b = workdir / f"{name}-a", workdir / f"{name}-b"
    proc = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15  # socat starts in ms; a loaded machine may take seconds
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("socat did not create the pty pair")
        time.sleep(0.01)
    return PtyPair(str(a), str(b), proc)
