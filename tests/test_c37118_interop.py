"""Interop over real loopback TCP with pyPMU (synchrophasor 1.0.0a0), a peer no one here wrote.

pyPMU as a PMU (its ``Pmu`` server) is read by our PdcClient; pyPMU as a PDC (its ``Pdc``) reads our
SimPmu. pyPMU quirks handled here: it needs the old ``collections`` aliases on Python 3.10+; its
errors derive from BaseException; its PMU forks one busy-polling process per client (terminated at
the end of each test); its PDC's ``get()`` reads one recv() and gives None when two frames arrive in
it; it scales the *angle* of integer polar phasors by PHUNIT (so the SimPmu here sends integer
rectangular phasors, which it scales correctly); it treats float FREQ as a deviation (integer FREQ
used); it reads STAT bits 8-6 (PMU time quality) unshifted, ``TIME_QUALITY_WORDS[stat & 0x1C0]``, so any
value but 0 makes every data frame a FrameError (the SimPmu here sends STAT time quality 0, "not used").
"""

from __future__ import annotations

import asyncio
import cmath
import contextlib
import importlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.net import free_port

from protocols.c37118 import ConfigFrame, DataFormat, DataFrame, PhasorKind, Stat
from protocols.c37118.pdc import PdcClient, PmuEndpoint
from sim_hw.devices.pmu import PmuMeasurement, SimPmu


def _pypmu(module: str):
    import collections
    import collections.abc

    for alias in ("Sequence", "Mapping", "Iterable", "MutableMapping", "Callable"):
        if not hasattr(collections, alias):
            setattr(collections, alias, getattr(collections.abc, alias))
    mod = importlib.import_module(f"synchrophasor.{module}")  # hard import: a missing peer must fail
    for name in ("synchrophasor.pmu", "synchrophasor.pdc"):
        logging.getLogger(name).setLevel(logging.ERROR)  # it logs every frame to stdout at INFO
    return mod


NAMES = ["VA", "VB", "VC", "I1", "P", "Q"] + [f"BRK{i}" for i in range(16)]
PHASORS = [(7200.5, 0.5), (7199.0, -1.5), (7201.0, 2.5), (100.25, -0.25)]


@contextmanager
def pypmu_server(port: int) -> Iterator[object]:
    """pyPMU's Pmu on 127.0.0.1:port, fed 30 data frames/s by a thread; its forked handlers killed after."""
    pmu_mod = _pypmu("pmu")
    frame = _pypmu("frame")
    cfg = frame.ConfigFrame2(
        7734, 1_000_000, 1, "Station A", 7734, 7, 4, 2, 1, NAMES,
        [(915527, "v")] * 3 + [(45776, "i")], [(1, "pow"), (1, "rms")], [(0x0000, 0xFFFF)],
        60, 22, 30,
    )  # fmt: skip
    pmu = pmu_mod.Pmu(pmu_id=7734, data_rate=30, port=port, ip="127.0.0.1")
    pmu.logger.setLevel(logging.ERROR)
    pmu.set_configuration(cfg)
    pmu.set_header("GridEdge interop")
    pmu.run()
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(1 / 30):
            pmu.send_data(phasors=list(PHASORS), analog=[1.5e6, -2.5e5], digital=[0x3C12], freq=-125, dfreq=37)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield pmu
    finally:
        stop.set()
        feeder.join(2)
        for proc in pmu.clients:
            proc.terminate()
            proc.join(2)
        # pyPMU's acceptor thread has no way to stop, and on Linux close() does not wake its accept(): it would stay
        # blocked until the fd number was reused, then raise in a later test ("Socket operation on non-socket").
        # shutdown() wakes it, so its error belongs to this test, which ignores it.
        with contextlib.suppress(OSError):
            pmu.socket.shutdown(socket.SHUT_RDWR)
        pmu.socket.close()
        pmu.listener.join(2)
        assert not pmu.listener.is_alive()


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # pyPMU's acceptor, above
@async_test
async def test_our_pdc_client_reads_pypmu_as_a_pmu() -> None:
    port = free_port()
    frames: list[DataFrame] = []
    configs: list[ConfigFrame] = []
    with pypmu_server(port):
        client = PdcClient(
            PmuEndpoint("127.0.0.1", port, 7734),
            on_frame=frames.append,
            on_config=configs.append,
            backoff_min_s=0.1,
            backoff_max_s=0.5,
        )
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 5, timeout=15)
    (cfg,) = configs
    assert cfg.version == 1 and cfg.idcode == 7734 and cfg.data_rate == 30 and cfg.time_base == 1_000_000
    (pmu,) = cfg.pmus
    assert pmu.station == "Station A" and pmu.cfgcnt == 22 and pmu.nominal_hz == 60
    assert pmu.phasor_names == ("VA", "VB", "VC", "I1") and pmu.analog_names == ("P", "Q")
    assert pmu.digital_names[0] == "BRK0" and pmu.format == DataFormat(False, True, True, True)
    assert pmu.phasor_units[3].kind == PhasorKind.CURRENT and pmu.phasor_units[0].scale == 915527
    values = frames[-1].pmus[0]
    assert values.phasors == tuple(PHASORS)
    assert values.freq == -125 and values.frequency_hz == pytest.approx(59.875) and values.dfreq == 37
    assert values.analogs == (1.5e6, -2.5e5) and values.digitals == (0x3C12,)
    assert abs(frames[-1].timestamp.as_float() - time.time()) < 5, "pyPMU stamps frames with its clock"
    assert not client.stats.frame_errors


def _sim_source(t: float) -> PmuMeasurement:
    v = [cmath.rect(7200.0 + (t % 1), -k * 2.0944) for k in range(3)]
    return PmuMeasurement((*v, cmath.rect(150.0, -0.3)), 60.012, 0.25, (1.0e6, 3.0e5), (0x8001,))


@async_test
async def test_pypmu_as_a_pdc_reads_our_simulated_pmu() -> None:
    pdc_mod = _pypmu("pdc")
    fmt = DataFormat(freq_float=False, analog_float=True, phasor_float=False, polar=False)
    phasors = [("VA", PhasorKind.VOLTAGE), ("VB", PhasorKind.VOLTAGE), ("VC", PhasorKind.VOLTAGE), ("IA", 1)]
    async with SimPmu(
        4321, "GRIDEDGE SIM", port=0, rate=10, format=fmt, phasors=phasors, source=_sim_source, stat=Stat()
    ) as sim:

        def as_pdc() -> tuple:
            pdc = pdc_mod.Pdc(pdc_id=4321, pmu_ip="127.0.0.1", pmu_port=sim.port)
            pdc.logger.setLevel(logging.ERROR)
            pdc.run()
            pdc.pmu_socket.settimeout(5)  # its get() would spin forever on a closed socket
            try:
                header = pdc.get_header()
                config = pdc.get_config("cfg2")
                pdc.start()
                data = []
                deadline = time.monotonic() + 10
                while len(data) < 3 and time.monotonic() < deadline:
                    frame = pdc.get()  # None when two frames came in one recv(): pyPMU's reader drops them
                    if frame is not None and type(frame).__name__ == "DataFrame":
                        data.append(frame)
                pdc.stop()
                return header, config, data
            finally:
                pdc.quit()

        header, config, data = await asyncio.to_thread(as_pdc)
    assert "GRIDEDGE SIM" in header.get_header()
    assert config.get_id_code() == 4321 and config.get_station_name().rstrip() == "GRIDEDGE SIM"
    assert config.get_data_rate() == 10 and config.get_time_base() == 1_000_000 and config.get_fnom() == 60
    assert [n.rstrip() for n in config.get_channel_names()[:6]] == ["VA", "VB", "VC", "IA", "P", "Q"]
    assert len(data) == 3
    ours = sim.config.pmus[0]
    for frame in data:
        m = frame.get_measurements()
        t = m["time"]
        assert abs(t * 10 - round(t * 10)) < 1e-6, "on the 10 frames/s grid"
        (meas,) = m["measurements"]
        expected = _sim_source(t)
        for (mag, ang), want, unit in zip(meas["phasors"], expected.phasors, ours.phasor_units, strict=True):
            lsb = unit.scale * 1e-5  # the integer scaling: one count of PHUNIT
            assert mag == pytest.approx(abs(want), abs=lsb)
            assert ang == pytest.approx(cmath.phase(want), abs=2 * lsb / abs(want))
        assert meas["frequency"] == pytest.approx(60.012)  # integer FREQ: mHz deviation + FNOM
        assert meas["rocof"] == 25  # pyPMU leaves integer DFREQ unscaled (ROCOF x 100)
        assert meas["analog"] == [1.0e6, 3.0e5] and meas["digital"] == [0x8001]
