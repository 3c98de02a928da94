"""Child processes of one end-to-end test: each in its own process group (so a kill takes its children, such
as the bench's socat, with it), each with its log file in the test's folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


class Processes:
    """Mixed into a test's site dataclass, which provides ``workdir`` and ``procs``."""

    workdir: Path
    procs: dict[str, subprocess.Popen]

    def spawn(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` in ``workdir``; stdout and stderr go to ``<name>.log`` unless ``kw`` says otherwise."""
        with open(self.workdir / f"{name}.log", "ab") as log:
            kw.setdefault("stdout", log)
            proc = subprocess.Popen(argv, cwd=self.workdir, stderr=log, start_new_session=True, **kw)
        self.procs[name] = proc
        return proc

    def start_gridedge(self, name: str, *args: str) -> subprocess.Popen:
        """``gridedge ARGS...`` as this interpreter runs it (the installed package, no PATH needed)."""
        return self.spawn(name, [sys.executable, "-m", "gridedge", *args])

    def stop(self, name: str, timeout_s: float = 30.0) -> int:
        """SIGTERM and the exit code; whatever the group left behind is killed after."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def kill(self, name: str) -> None:
        """SIGKILL to the whole group: a power cut for that process."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def kill_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, *names: str) -> str:
        """The tail of each named log, for an assertion message."""
        return "\n".join(f"---- {n}.log\n{self.log(n)[-3000:]}" for n in names)


def run_gridedge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``gridedge ARGS...`` run to its end by this interpreter, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "gridedge", *args], capture_output=True, text=True, timeout=timeout)
