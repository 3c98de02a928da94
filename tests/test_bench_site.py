"""The process rig of the bench tests (tests/helpers/benchsite.py): a bench whose port another process holds is
started again on new ports instead of leaving a test to read from a bench that is not there."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite

from sim_hw.config import load_bench_config

pytestmark = pytest.mark.integration


def test_a_bench_whose_port_is_held_by_another_process_starts_again_on_new_ports(tmp_path: Path) -> None:
    bench_path = ieee13_copy(tmp_path, irradiance="none")
    taken = next(d.port for d in load_bench_config(bench_path).devices if d.name == "fdr-671-meter")
    holder = socket.socket()
    holder.bind(("127.0.0.1", taken))
    holder.listen()
    site = BenchSite(tmp_path)
    try:
        cfg, link = site.start_bench(bench_path, 1.0)
        assert next(d.port for d in cfg.devices if d.name == "fdr-671-meter") != taken
        assert site.procs["sim"].poll() is None and link.exists()
        assert "event=bench_up" in site.log("sim") and "address already in use" in site.log("sim")
    finally:
        site.kill_all()
        holder.close()
