"""The PDC client against our simulated PMU over real loopback sockets."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from dataclasses import replace
from operator import length_hint

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.net import free_port

from protocols.c37118 import ConfigFrame, CrcError, DataFrame, FrameError, PhasorKind, SyncError, encode_frame
from protocols.c37118.pdc import (
    STAT_CONFIG_CHANGED,
    AlignedFrames,
    Aligner,
    PdcClient,
    PdcConnectError,
    PdcSession,
    PdcTimeoutError,
    PmuEndpoint,
    ReadBatcher,
    StaleWatch,
    stat_word_indices,
)
from sim_hw.devices.pmu import SimPmu


def _client(port: int, idcode: int, **kw: object) -> tuple[PdcClient, list[DataFrame], list[ConfigFrame], list]:
    frames: list[DataFrame] = []
    configs: list[ConfigFrame] = []
    errors: list[FrameError] = []
    kw.setdefault("backoff_min_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    client = PdcClient(
        PmuEndpoint("127.0.0.1", port, idcode, **kw.pop("ep", {})),  # type: ignore[arg-type]
        on_frame=frames.append,
        on_config=configs.append,
        on_error=errors.append,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )
    return client, frames, configs, errors


@async_test
async def test_data_flows_after_config_and_data_on() -> None:
    async with SimPmu(7734, "SIM A", port=0, rate=50) as sim:
        client, frames, configs, errors = _client(sim.port, 7734)
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 10)
        assert len(configs) == 1 and configs[0].frame_type.name == "CFG2" and configs[0].pmus[0].station == "SIM A"
        assert client.stats.frames >= 10 and client.stats.reconnects == 0 and not errors
        assert client.stats.last_frame_monotonic is not None
        stamps = [f.timestamp.as_fraction() for f in frames]
        assert stamps == sorted(stamps)


@async_test
async def test_cfg3_is_asked_for_and_used() -> None:
    async with SimPmu(8, "SIM", port=0, rate=20) as sim:
        client, frames, configs, _ = _client(sim.port, 8, ep={"cfg_version": 3})
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 2)
        assert configs[0].frame_type.name == "CFG3" and frames[0].config is configs[0]


@async_test
async def test_udp_data_with_tcp_commands() -> None:
    async with SimPmu(9, "SIM", port=0, rate=20) as sim:
        client, frames, _, _ = _client(sim.port, 9, ep={"udp_port": free_port()})
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 3)
        assert sim.stats.data_frames_sent >= 3


@async_test
async def test_batched_reads_take_several_frames_a_read_in_order() -> None:
    batcher = ReadBatcher(0.1)
    async with SimPmu(31, "SIM", port=0, rate=50) as sim:
        client, frames, _, errors = _client(sim.port, 31, batcher=batcher)
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 30)
            assert len(batcher) == 1, "the streaming session's socket is read by the batcher"
        assert batcher.reads >= 2 and len(frames) / batcher.reads >= 2, "several frames a read"
        stamps = [f.timestamp.as_fraction() for f in frames]
        assert stamps == sorted(set(stamps)), "in order, none twice"
        assert not errors and len(batcher) == 0, "a closed session leaves the batcher"
    with pytest.raises(ValueError, match="interval_s"):
        ReadBatcher(0)


@async_test
async def test_batched_stream_sees_the_pmu_closing_and_reconnects() -> None:
    batcher = ReadBatcher(0.05)
    async with SimPmu(32, "SIM", port=0, rate=50) as sim:
        client, frames, _, _ = _client(sim.port, 32, batcher=batcher)
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 5)
            sim.drop_clients()
            await until(lambda: client.stats.reconnects >= 1)
            assert "closed" in client.stats.last_error
            n = len(frames)
            await until(lambda: len(frames) >= n + 5)
        assert sim.stats.connections >= 2


@async_test
async def test_batched_socket_reset_ends_the_session_as_the_transport_would() -> None:
    # A session on one end of a TCP connection: frames written at the other end come in batches; a reset
    # (SO_LINGER 0, then close) is a ConnectionClosedError naming the reason, and the batcher lets go.
    pmu = SimPmu(33, "SIM", rate=50)
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        theirs, _ = server.accept()
    session = PdcSession(PmuEndpoint("127.0.0.1", 4712, 33))
    session._set_config(pmu.config)
    loop = asyncio.get_running_loop()
    session._transport, _ = await loop.connect_accepted_socket(session._tcp_protocol, sock=ours)
    got: list = []
    session.deliver_to(got.append)
    batcher = ReadBatcher(0.05)
    session.batch_reads(batcher)
    k0 = 1_700_000_000 * 50
    theirs.sendall(b"".join(encode_frame(pmu.data_frame(k0 + k)) for k in range(5)))
    await until(lambda: len(got) == 5)
    assert batcher.reads == 1 and all(isinstance(e, DataFrame) for e in got)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    theirs.close()
    await until(lambda: len(got) == 6)
    assert type(got[-1]).__name__ == "ConnectionClosedError"
    assert str(got[-1]) == "TCP connection lost: Connection reset by peer"
    assert len(batcher) == 0
    await session.close()


@async_test
async def test_reconnects_after_the_pmu_restarts() -> None:
    port = free_port()
    sim = SimPmu(21, "SIM", port=port, rate=20)
    await sim.start()
    client, frames, configs, _ = _client(port, 21)
    async with running_tasks(client.run()):
        await until(lambda: len(frames) >= 2)
        await sim.stop()
        await until(lambda: client.stats.reconnects >= 2)  # refused while the PMU is off
        n = len(frames)
        sim = SimPmu(21, "SIM", port=port, rate=20)
        await sim.start()
        await until(lambda: len(frames) >= n + 3)
        await sim.stop()
    assert "connect" in client.stats.last_error or "closed" in client.stats.last_error
    assert len(configs) == 1, "the same configuration after a reconnect is not a change"


@async_test
async def test_stale_stream_is_a_failure_and_reconnects() -> None:
    async with SimPmu(22, "SIM", port=0, rate=50) as sim:
        client, frames, _, _ = _client(sim.port, 22, stale_periods=5, stale_min_s=0.2)
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 2)
            sim.stop_sending()
            await until(lambda: client.stats.stale >= 1)
            assert client.stats.reconnects >= 0 and "no data frame" in client.stats.last_error
            sim.resume_sending()
            n = len(frames)
            await until(lambda: len(frames) > n + 2)
        assert sim.stats.connections >= 2


@async_test
async def test_config_change_is_followed() -> None:
    async with SimPmu(23, "SIM", port=0, rate=20) as sim:
        client, frames, configs, _ = _client(sim.port, 23)
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 2)
            sim.change_config(phasors=[("V1", PhasorKind.VOLTAGE), ("V2", PhasorKind.VOLTAGE)], flag_s=1.0)
            await until(lambda: client.stats.config_changes == 1)
            await until(lambda: len(frames[-1].pmus[0].phasors) == 2)
        assert configs[-1].pmus[0].cfgcnt == configs[0].pmus[0].cfgcnt + 1
        assert configs[-1].pmus[0].phasor_names == ("V1", "V2") and len(configs) == 2


@async_test
async def test_config_change_without_stat_bit_is_caught_by_size_mismatch() -> None:
    async with SimPmu(24, "SIM", port=0, rate=20) as sim:
        client, frames, configs, errors = _client(sim.port, 24)
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 2)
            sim.change_config(phasors=[("V1", PhasorKind.VOLTAGE)], flag_s=0.0)
            await until(lambda: client.stats.config_changes == 1)
            await until(lambda: len(frames[-1].pmus[0].phasors) == 1)
        assert client.stats.frame_errors["ConfigMismatchError"] >= 1


@async_test
async def test_garbage_on_the_wire_gives_typed_errors_and_the_stream_resyncs() -> None:
    async with SimPmu(25, "SIM", port=0, rate=20) as sim:
        client, frames, _, errors = _client(sim.port, 25)
        async with running_tasks(client.run()):
            await until(lambda: len(frames) >= 2)
            sim.inject(b"\x01\x02not a frame at all\x03")
            good = bytearray(encode_frame(sim.data_frame(1)))
            good[-1] ^= 0xFF  # a damaged frame: CHK wrong
            sim.inject(bytes(good))
            n = len(frames)
            await until(lambda: len(frames) >= n + 3)
        assert any(isinstance(e, SyncError) for e in errors) and any(isinstance(e, CrcError) for e in errors)
        assert client.stats.frame_errors["SyncError"] >= 1 and client.stats.frame_errors["CrcError"] == 1
        assert client.stats.reconnects == 0, "garbage is not a reason to drop the connection"


@async_test
async def test_session_errors_are_typed() -> None:
    with pytest.raises(PdcConnectError, match="refused"):
        await PdcSession.open(PmuEndpoint("127.0.0.1", free_port(), 1))
    async with SimPmu(26, "SIM", port=0, rate=20) as sim:
        # a PMU that ignores us (wrong IDCODE) never sends its configuration
        with pytest.raises(PdcTimeoutError, match="no CFG-2"):
            await PdcSession.open(PmuEndpoint("127.0.0.1", sim.port, 27), config_timeout_s=0.3, config_retry_s=0.1)


@async_test
async def test_cancel_landing_anywhere_in_a_frame_burst_ends_the_client() -> None:
    # A burst of frames is handed over while the cancel lands 0..7 loop steps after a frame: with a
    # per-frame asyncio.wait_for (Python 3.11) a cancel arriving as the inner get completed would be swallowed
    # and the client would stream on forever.
    loop = asyncio.get_running_loop()
    async with SimPmu(41, "SIM", port=0, rate=10) as sim:
        k0 = 1_700_000_000 * 10
        burst = b"".join(encode_frame(sim.data_frame(k0 + k)) for k in range(40))
        for hops in range(8):
            client, frames, _, _ = _client(sim.port, 41)
            task = asyncio.create_task(client.run())
            await until(lambda: client.stats.frames >= 1)  # noqa: B023
            n = len(frames)

            def cancel_after(k: int) -> None:
                if k:
                    loop.call_soon(cancel_after, k - 1)
                else:
                    task.cancel()  # noqa: B023

            def on_frame(f: DataFrame) -> None:
                frames.append(f)  # noqa: B023
                if len(frames) == n + 5:  # noqa: B023
                    cancel_after(hops)  # noqa: B023

            client.on_frame = on_frame
            sim.inject(burst)
            done, _ = await asyncio.wait([task], timeout=2.0)
            assert task in done, f"client still running 2 s after a cancel {hops} loop steps into a burst"
            assert task.cancelled()


async def _silent_server() -> tuple[asyncio.Server, int]:
    """Accepts and never answers: a client waits for its configuration."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@async_test
async def test_cancel_ends_clients_within_a_second_in_every_phase() -> None:
    server, silent_port = await _silent_server()
    async with server, SimPmu(42, "SIM", port=0, rate=60) as sim:
        streaming = [_client(sim.port, 42)[0] for _ in range(8)]
        waiting_config = [_client(silent_port, 43, config_timeout_s=30)[0] for _ in range(4)]
        backing_off = [_client(free_port(), 44, backoff_min_s=30, backoff_max_s=30)[0] for _ in range(4)]
        tasks = [asyncio.create_task(c.run()) for c in (*streaming, *waiting_config, *backing_off)]
        await until(lambda: all(c.stats.frames >= 5 for c in streaming))
        await until(lambda: all(c.stats.reconnects == 0 and "refused" in c.stats.last_error for c in backing_off))
        t0 = time.monotonic()
        for t in tasks:
            t.cancel()
        done, pending = await asyncio.wait(tasks, timeout=5.0)
        elapsed = time.monotonic() - t0
        for t in pending:
            t.cancel()
        assert not pending, f"{len(pending)} of {len(tasks)} clients still running 5 s after cancel"
        assert elapsed < 1.0 and all(t.cancelled() for t in done)
        assert all(not c.stats.connected for c in streaming)


def test_stat_words_of_every_pmu_block_are_found_in_the_raw_words() -> None:
    # STAT bit 10 (6.3 Table 7) is read from DataFrame.words at these indices, without the per-PMU view.
    a = SimPmu(1, "A", rate=10, phasors=[("VA", PhasorKind.VOLTAGE)])
    b = SimPmu(2, "B", rate=10)
    b.change_config(phasors=[("V1", PhasorKind.VOLTAGE), ("V2", PhasorKind.VOLTAGE)], flag_s=60.0)
    cfg = replace(a.config, pmus=(a.config.pmus[0], b.config.pmus[0], a.config.pmus[0]))
    fa, fb = a.data_frame(100).pmus[0], b.data_frame(100).pmus[0]
    frame = DataFrame.build(cfg, [fa, replace(fb, config=b.config.pmus[0]), fa])
    idx = stat_word_indices(cfg)
    assert [frame.words[i] for i in idx] == [p.stat.word for p in frame.pmus]
    flagged = [bool(frame.words[i] & STAT_CONFIG_CHANGED) for i in idx]
    assert flagged == [p.stat.config_changed for p in frame.pmus] == [False, True, False]


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    c = PdcClient(PmuEndpoint("127.0.0.1"), on_frame=print, backoff_min_s=0.5, backoff_max_s=4, rng=random.Random(3))
    delays = [c.backoff_s(a) for a in range(1, 8)]
    bases = [0.5, 1, 2, 4, 4, 4, 4]
    assert all(b / 2 <= d <= b for d, b in zip(delays, bases, strict=True))
    assert len(set(delays)) == len(delays), "jittered"
    with pytest.raises(ValueError):
        PdcClient(PmuEndpoint("127.0.0.1"), on_frame=print, backoff_min_s=0)
    with pytest.raises(ValueError, match="cfg_version"):
        PmuEndpoint("127.0.0.1", cfg_version=4)


@async_test
async def test_aligner_over_three_pmus_with_one_late_and_missing() -> None:
    aligned: list[AlignedFrames] = []
    async with (
        SimPmu(31, "P1", port=0, rate=20) as a,
        SimPmu(32, "P2", port=0, rate=20) as b,
        SimPmu(33, "P3", port=0, rate=20) as c,
    ):
        aligner = Aligner([31, 32, 33], 0.3, aligned.append)
        delayed: list[DataFrame] = []
        clients = [
            _client(a.port, 31)[0],
            _client(b.port, 32)[0],
            _client(c.port, 33)[0],
        ]
        started: set[int] = set()
        for cl in clients:
            cl.on_frame = lambda f: started.add(f.idcode)
        async with running_tasks(*(cl.run() for cl in clients), aligner.run()):
            await until(lambda: len(started) == 3)  # align only once every PMU streams
            clients[0].on_frame = clients[1].on_frame = aligner.add
            clients[2].on_frame = delayed.append  # P3's frames are held back, then delivered late
            await until(lambda: len(aligned) >= 5 and len(delayed) >= 5)
            c.stop_sending()
            await asyncio.sleep(0.4)
            for f in delayed[:3]:
                aligner.add(f)
            c.resume_sending()
            clients[2].on_frame = aligner.add
            await until(lambda: aligner.stats.complete >= 3)
    assert aligner.stats.missing[33] >= 5 and aligner.stats.missing[31] == 0
    assert aligner.stats.late[33] >= 1
    first = aligned[0]
    assert first.missing == (33,) and set(first.frames) == {31, 32}
    complete = [s for s in aligned if not s.missing]
    assert all(len({f.timestamp for f in s.frames.values()}) == 1 for s in complete)


def test_aligner_with_an_injected_clock() -> None:
    now = [0.0]
    out: list[AlignedFrames] = []
    sim1, sim2 = SimPmu(1, "A", rate=10), SimPmu(2, "B", rate=10)
    al = Aligner([1, 2], 0.5, out.append, clock=lambda: now[0])
    al.add(sim1.data_frame(100))
    al.add(sim2.data_frame(100))
    assert len(out) == 1 and out[0].missing == () and al.stats.complete == 1
    al.add(sim1.data_frame(101))
    now[0] = 0.4
    al.poll()
    assert len(out) == 1
    now[0] = 0.6
    al.poll()
    assert out[-1].missing == (2,) and al.stats.missing[2] == 1
    al.add(sim2.data_frame(101))
    assert al.stats.late[2] == 1 and len(out) == 2
    al.add(SimPmu(3, "C", rate=10).data_frame(102))
    assert al.stats.unknown == 1


@async_test
async def test_a_read_with_a_bad_frame_and_a_failing_callback_in_the_middle_delivers_every_good_frame() -> None:
    # One batched read brings 3 frames, a damaged one, 3 more: on_frames gets the good ones in runs around
    # the error, which on_error hears of; a frame whose handling raises is counted, and the frames after it
    # in the same read are still handed over. stats.frames counts every data frame read.
    batcher = ReadBatcher(0.1)
    async with SimPmu(34, "SIM", port=0, rate=20) as sim:
        k0 = 1_600_000_000 * 20
        burst = [encode_frame(sim.data_frame(k0 + k)) for k in range(7)]
        damaged = bytearray(burst[3])
        damaged[20] ^= 0x01
        burst[3] = bytes(damaged)
        raising = sim.data_frame(k0 + 5).timestamp
        got: list[DataFrame] = []
        batches: list[int] = []

        def on_frames(it) -> None:
            batches.append(length_hint(it))
            for f in it:
                if f.timestamp == raising:
                    raise RuntimeError("a consumer's bug")
                got.append(f)

        client, _, _, errors = _client(sim.port, 34, batcher=batcher, on_frames=on_frames)
        async with running_tasks(client.run()):
            await until(lambda: len(got) >= 5)
            sim.inject(b"".join(burst))
            await until(lambda: client.stats.callback_errors == 1 and len(got) >= 20)
        stamps = [f.timestamp for f in got]
        ours = [s for s in stamps if s.soc < 1_700_000_000]
        assert ours == [sim.data_frame(k0 + k).timestamp for k in (0, 1, 2, 4, 6)], "every good frame, in order"
        assert [type(e).__name__ for e in errors] == ["CrcError", "SyncError"]  # the rest of the damaged frame
        assert client.stats.frame_errors == {"CrcError": 1, "SyncError": 1}
        assert client.stats.frames == len(got) + 1 and client.stats.callback_errors == 1
        assert max(batches) >= 2, "the frames of a read in one call"


@async_test
async def test_clients_sharing_a_stale_watch_each_go_stale_on_their_own_deadline() -> None:
    # One StaleWatch keeps both clients' deadlines on one timer: the PMU that stops sending goes stale and
    # reconnects, the other streams on undisturbed; a closed session leaves the watch.
    watch = StaleWatch()
    async with SimPmu(51, "A", port=0, rate=50) as a, SimPmu(52, "B", port=0, rate=50) as b:
        ca, fa, _, _ = _client(a.port, 51, stale_periods=5, stale_min_s=0.2, stale_watch=watch)
        cb, fb, _, _ = _client(b.port, 52, stale_periods=5, stale_min_s=0.2, stale_watch=watch)
        async with running_tasks(ca.run(), cb.run()):
            await until(lambda: len(fa) >= 5 and len(fb) >= 5 and len(watch) == 2)
            a.stop_sending()
            await until(lambda: ca.stats.stale >= 1)
            assert (
                "no data frame" in ca.stats.last_error
                and "in 0.2 s" in ca.stats.last_error
                and cb.stats.stale == 0
                and cb.stats.reconnects == 0
            )
        assert len(watch) == 0
