"""An RS-485 line of the bench: a socat pty pair whose two ends are symbolic links, ``link`` (the agent opens it)
and ``<link>-sim`` (the bench's server opens it).

The links are names shared by every program on the machine. A bench never takes a link over from a live socat
(another bench serving the same line, whose agent would lose its RTU devices), and removes on its way out only the
links that still point at the ptys its own socat made. socat runs with ``unlink-close=0`` so that it never removes
a link itself (it would, blindly, when it exits), and dies with the bench that started it (``PR_SET_PDEATHSIG``), so
a bench killed with SIGKILL leaves dangling links, which the next bench replaces, rather than a socat holding them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from protocols.eventlog import EventLog

log = EventLog("sim.bench")

_PR_SET_PDEATHSIG = 1  # prctl(2)
_CMD_CHARS = 160  # a holder's command line, shortened for a message


class PtyPairError(Exception):
    """The pty pair cannot be made: socat missing or failing, or a link that belongs to someone else."""


def _normal(path: Path) -> str:
    """``path`` absolute, its folder's symbolic links resolved but not the link itself (it points at a pty)."""
    return str(path.parent.resolve() / path.name)


def _cmdline(pid: int | str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; comm may hold spaces or ")"


def _claims(pid: str, argv: list[str], want: str) -> bool:
    """True when one of ``argv``'s socat addresses has the option ``link=<want>``."""
    for arg in argv[1:]:
        for option in arg.split(","):
            if not option.startswith("link="):
                continue
            value = option[len("link=") :]
            if not os.path.isabs(value):  # relative to that process's working directory
                try:
                    value = os.path.join(os.readlink(f"/proc/{pid}/cwd"), value)
                except OSError:
                    continue
            if _normal(Path(value)) == want:
                return True
    return False


def link_holder(path: Path, *, ignore: frozenset[int] = frozenset()) -> str | None:
    """The live process that made the link ``path`` (a socat whose ``link=`` option names it), described for a
    message (``socat pid 12, started by pid 10 (python -m gridedge sim run ...)``), or None when no process
    claims it. ``ignore``: pids not to count (this bench's own socats)."""
    want = _normal(path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ignore or int(entry.name) == os.getpid():
            continue
        argv = _cmdline(entry.name)
        if not argv or not _claims(entry.name, argv, want):
            continue
        pid = int(entry.name)
        holder = f"{Path(argv[0]).name} pid {pid}"
        ppid = _parent(pid)
        if ppid is not None:
            parent = " ".join(_cmdline(ppid))
            if len(parent) > _CMD_CHARS:
                parent = parent[: _CMD_CHARS - 3] + "..."
            holder += f", started by pid {ppid}" + (f" ({parent})" if parent else "")
        return holder
    return None


def _die_with_parent() -> None:
    """In socat, before exec: SIGTERM when the bench that started it dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class PtyPair:
    """A running socat pty pair and the targets its links had when it made them."""

    link: Path
    sim_path: Path
    proc: subprocess.Popen[bytes]
    targets: dict[Path, str] = field(default_factory=dict)  # link -> the pty it pointed at when made

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def open(cls, link: Path, sim_path: Path, *, timeout_s: float = 5.0) -> PtyPair:
        """Start socat with ``sim_path`` and ``link`` as its two ends; raises PtyPairError naming the path and,
        for a link someone else holds, who holds it."""
        socat = shutil.which("socat")
        if socat is None:
            raise PtyPairError("socat is not installed (needed for the RTU pty pair)")
        link.parent.mkdir(parents=True, exist_ok=True)
        for path in (link, sim_path):
            holder = link_holder(path)
            if holder is not None:
                raise PtyPairError(
                    f"{path} is held by {holder}: another bench serves this RS-485 line; stop it first, or give "
                    "this bench a [[buses]] link of its own"
                )
            if path.is_symlink():  # its socat is gone (a bench that was killed): a dangling name
                log.info("pty_link_stale", path=path, target=os.readlink(path))
                path.unlink()
            elif path.exists():
                raise PtyPairError(f"{path} exists and is not a pty link; refusing to replace it")
        proc = subprocess.Popen(
            [socat, f"pty,raw,echo=0,unlink-close=0,link={sim_path}", f"pty,raw,echo=0,unlink-close=0,link={link}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        pair = cls(link, sim_path, proc)
        deadline = time.monotonic() + timeout_s
        try:
            while not (link.is_symlink() and sim_path.is_symlink()):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    raise PtyPairError(f"socat exited with {proc.returncode}: {err}")
                if time.monotonic() > deadline:
                    raise PtyPairError(f"socat did not create {link} within {timeout_s:g} s")
                await asyncio.sleep(0.01)
            pair.targets = {path: os.readlink(path) for path in (link, sim_path)}
        except BaseException:
            pair.close()
            raise
        return pair

    def close(self) -> None:
        """Stop socat and remove the links that still point at its ptys (never one made or replaced by another
        program since)."""
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        for path, target in self.targets.items():
            with contextlib.suppress(OSError):  # gone already, or not a link any more
                if os.readlink(path) == target:
                    path.unlink()
        self.targets.clear()
