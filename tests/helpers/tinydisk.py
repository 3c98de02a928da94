"""A real 4 MiB disk for the store's full-disk tests: a tmpfs mounted for the test (as root; otherwise in a
user+mount namespace through ``unshare``), and another program that fills it to the last byte."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISK_BYTES = 4 << 20


@contextlib.contextmanager
def tiny_fs(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)  # lazy: a store left open by a failed assert


def on_tiny_fs(tmp_path: Path, scenario: Callable[..., None], *others: Path) -> None:
    """Run ``scenario(disk, *others)`` with ``disk`` on a 4 MiB tmpfs: mounted here as root, else in a namespace
    (``scenario`` must then be a module-level function of a test module, found again by its names)."""
    if os.geteuid() == 0:
        with tiny_fs(tmp_path / "disk") as disk:
            scenario(disk, *others)
        return
    code = (
        "import sys, importlib; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']; from pathlib import Path; "
        "from helpers.tinydisk import tiny_fs; t = importlib.import_module(sys.argv[2]); ctx = tiny_fs(Path(sys.argv[3])); "
        "d = ctx.__enter__(); getattr(t, sys.argv[4])(d, *map(Path, sys.argv[5:])); ctx.__exit__(None, None, None)"
    )
    cmd = ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", code]
    args = [str(ROOT), scenario.__module__, str(tmp_path / "disk"), scenario.__name__, *map(str, others)]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]


def fill(path: Path) -> int:
    """Another program fills the disk to the last byte; returns the bytes it took."""
    taken = 0
    chunk = bytes(64 * 1024)
    with open(path, "wb", buffering=0) as f:
        for size in (64 * 1024, 4096, 512, 1):
            while True:
                try:
                    f.write(chunk[:size])
                except OSError as err:
                    assert err.errno == errno.ENOSPC
                    break
                taken += size
    return taken
