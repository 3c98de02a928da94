"""`gridedge pmu probe ADDRESS`: connect to a PMU, print its configuration and its data frames decoded.

A field engineer's first look at a PMU: does it answer, what does it say it sends, and what does it
send. ADDRESS is ``tcp://host[:port]`` (port 4712 by default) or ``tcp://host[:port]?udp=PORT`` for
commands over TCP and data over UDP to local PORT. Exit status: 0 all frames read; 1 connection
failed or closed by the peer; 2 bad usage; 3 timeout (no configuration, or the data stopped); 4 a bad
frame, or a peer that is not a PMU (bytes that are not C37.118 frames, our own commands sent back).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from protocols.c37118 import (
    Config3Frame,
    ConfigFrame,
    DataFrame,
    FrameError,
    PhasorKind,
    PmuConfig,
    PmuData,
    Stat,
    TimeQuality,
    Timestamp,
)
from protocols.c37118.pdc import (
    ConnectionClosedError,
    PdcConnectError,
    PdcError,
    PdcSession,
    PdcTimeoutError,
    PmuEndpoint,
    Received,
    StaleStreamError,
)

EXIT_OK = 0
EXIT_CONNECT = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
EXIT_BAD_FRAME = 4
EXIT_HELP = (
    "exit status: 0 all frames read; 1 connection failed or closed by the peer; 2 bad usage; 3 timeout (no "
    "configuration, or the data stopped); 4 a bad frame, or a peer that is not a PMU"
)


class ProbeUsageError(ValueError):
    """An ADDRESS or option the probe cannot use."""


def parse_address(address: str, idcode: int, cfg: int) -> PmuEndpoint:
    """``tcp://host[:port][?udp=PORT]`` -> :class:`PmuEndpoint`; a :class:`ProbeUsageError` says what is wrong."""
    parts = urlsplit(address)
    if parts.scheme != "tcp" or not parts.hostname:
        raise ProbeUsageError(f"address {address!r}: expected tcp://host[:port][?udp=PORT]")
    try:
        port = parts.port or 4712
    except ValueError as err:
        raise ProbeUsageError(f"address {address!r}: bad port ({err})") from err
    query = parse_qs(parts.query)
    unknown = set(query) - {"udp"}
    if unknown:
        raise ProbeUsageError(f"address {address!r}: unknown option(s) {', '.join(sorted(unknown))}; only udp=PORT")
    udp = None
    if "udp" in query:
        try:
            udp = int(query["udp"][-1])
        except ValueError as err:
            raise ProbeUsageError(f"address {address!r}: udp={query['udp'][-1]!r} is not a port number") from err
    try:
        return PmuEndpoint(parts.hostname, port, idcode, cfg, udp)
    except ValueError as err:
        raise ProbeUsageError(f"address {address!r}: {err}") from err


# ---- rendering --------------------------------------------------------------------------------------------


def utc_text(ts: Timestamp) -> str:
    """ISO 8601 UTC with the fraction exact to TIME_BASE (7 digits shown for 10^7, etc.)."""
    digits = max(1, math.ceil(math.log10(ts.time_base))) if ts.time_base > 1 else 0
    base = datetime.fromtimestamp(ts.soc, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if not digits:
        return base + "Z"
    frac = ts.fracsec * 10**digits // ts.time_base
    return f"{base}.{frac:0{digits}d}Z"


def time_quality_dict(tq: TimeQuality) -> dict[str, Any]:
    return {
        "code": tq.code,
        "locked": tq.code == 0,
        "leap_pending": tq.leap_pending,
        "leap_occurred": tq.leap_occurred,
        "leap_negative": tq.leap_direction_negative,
    }


def stat_dict(stat: Stat) -> dict[str, Any]:
    return {
        "word": f"0x{stat.word:04X}",
        "data_error": int(stat.data_error),
        "sync_lost": stat.sync_lost,
        "sorted_by_arrival": stat.sorted_by_arrival,
        "trigger": stat.trigger,
        "config_changed": stat.config_changed,
        "data_modified": stat.data_modified,
        "time_quality": int(stat.time_quality),
        "unlocked_time": int(stat.unlocked_time),
        "trigger_reason": int(stat.trigger_reason),
    }


def _unit(kind: int) -> str:
    return "V" if kind == PhasorKind.VOLTAGE else "A"


def _phasor_kinds(pmu: PmuConfig) -> list[int]:
    if pmu.phasor_units:
        return [u.kind for u in pmu.phasor_units]
    scales = getattr(pmu, "phasor_scales", ())  # CFG-3: bit 3 of the type indicator, 0 voltage, 1 current
    return [(s.type_indicator >> 3) & 1 for s in scales]


def config_dict(cfg: ConfigFrame) -> dict[str, Any]:
    pmus = []
    for pmu in cfg.pmus:
        entry: dict[str, Any] = {
            "station": pmu.station,
            "idcode": pmu.idcode,
            "format": {
                "polar": pmu.format.polar,
                "phasor_float": pmu.format.phasor_float,
                "analog_float": pmu.format.analog_float,
                "freq_float": pmu.format.freq_float,
            },
            "phasors": [
                {"name": n, "unit": _unit(k)} for n, k in zip(pmu.phasor_names, _phasor_kinds(pmu), strict=True)
            ],
            "analogs": list(pmu.analog_names),
            "digitals": list(pmu.digital_names),
            "nominal_hz": pmu.nominal_hz,
            "cfgcnt": pmu.cfgcnt,
        }
        if isinstance(cfg, Config3Frame):
            entry["service_class"] = pmu.service_class  # type: ignore[attr-defined]
        pmus.append(entry)
    return {
        "type": "config",
        "frame": cfg.frame_type.name,
        "version": cfg.version,
        "idcode": cfg.idcode,
        "utc": utc_text(cfg.timestamp()),
        "time_base": cfg.time_base,
        "data_rate": cfg.data_rate,
        "pmus": pmus,
    }


def _pmu_values(data: PmuData) -> dict[str, Any]:
    pmu = data.config
    phasors = []
    for name, kind, value in zip(pmu.phasor_names, _phasor_kinds(pmu), data.phasor_values, strict=True):
        phasors.append(
            {
                "name": name,
                "magnitude": abs(value),
                "angle_deg": math.degrees(math.atan2(value.imag, value.real)),
                "unit": _unit(kind),
            }
        )
    return {
        "station": pmu.station,
        "idcode": pmu.idcode,
        "stat": stat_dict(data.stat),
        "phasors": phasors,
        "frequency_hz": data.frequency_hz,
        "rocof_hz_per_s": data.rocof_hz_per_s,
        "analogs": dict(zip(pmu.analog_names, (float(a) for a in data.analogs), strict=True)),
        "digitals": [f"0x{d:04X}" for d in data.digitals],
    }


def data_dict(frame: DataFrame) -> dict[str, Any]:
    ts = frame.timestamp
    return {
        "type": "data",
        "idcode": frame.idcode,
        "utc": utc_text(ts),
        "soc": ts.soc,
        "fracsec": ts.fracsec,
        "time_quality": time_quality_dict(frame.time_quality),
        "pmus": [_pmu_values(p) for p in frame.pmus],
    }


def config_text(d: dict[str, Any]) -> str:
    lines = [
        f"{d['frame']} (version {d['version']}) from IDCODE {d['idcode']} at {d['utc']}: "
        f"{d['data_rate']} frames/s, TIME_BASE {d['time_base']}"
    ]
    for p in d["pmus"]:
        fmt = p["format"]
        kinds = ["polar" if fmt["polar"] else "rectangular"] + [
            f"{k.split('_')[0]} {'float' if v else 'int'}" for k, v in fmt.items() if k != "polar"
        ]
        lines.append(f"  PMU {p['station']!r} IDCODE {p['idcode']} CFGCNT {p['cfgcnt']}, {p['nominal_hz']} Hz nominal")
        lines.append(f"    format: {', '.join(kinds)}")
        lines.append("    phasors: " + ", ".join(f"{ph['name']} [{ph['unit']}]" for ph in p["phasors"]))
        lines.append("    analogs: " + (", ".join(p["analogs"]) or "-"))
        lines.append(f"    digitals: {len(p['digitals'])} channels")
    return "\n".join(lines)


def data_text(d: dict[str, Any]) -> str:
    tq = d["time_quality"]
    lines = [f"{d['utc']} IDCODE {d['idcode']} time quality {tq['code']}{' (locked)' if tq['locked'] else ''}"]
    for p in d["pmus"]:
        s = p["stat"]
        flags = [k for k in ("sync_lost", "sorted_by_arrival", "trigger", "config_changed", "data_modified") if s[k]]
        lines.append(
            f"  {p['station']} ({p['idcode']}) STAT {s['word']} error {s['data_error']}"
            f" tq {s['time_quality']} unlocked {s['unlocked_time']}{' ' + ' '.join(flags) if flags else ''}"
        )
        for ph in p["phasors"]:
            lines.append(f"    {ph['name']:<8} {ph['magnitude']:12.3f} {ph['unit']} {ph['angle_deg']:+9.3f} deg")
        lines.append(f"    f {p['frequency_hz']:.4f} Hz  ROCOF {p['rocof_hz_per_s']:+.3f} Hz/s")
        if p["analogs"]:
            lines.append("    analogs: " + ", ".join(f"{k}={v:g}" for k, v in p["analogs"].items()))
        if p["digitals"]:
            lines.append("    digitals: " + " ".join(p["digitals"]))
    return "\n".join(lines)


# ---- the probe ---------------------------------------------------------------------------------------------


async def probe(endpoint: PmuEndpoint, frames: int, timeout_s: float, as_json: bool) -> int:
    def emit(d: dict[str, Any]) -> None:
        print(json.dumps(d) if as_json else (config_text(d) if d["type"] == "config" else data_text(d)), flush=True)

    where = f"{endpoint.host}:{endpoint.port}"
    try:
        session = await PdcSession.open(endpoint, connect_timeout_s=timeout_s, config_timeout_s=timeout_s)
    except PdcError as err:
        return _fail(*open_failure(err, endpoint, timeout_s))
    try:
        for err in session.early_errors:
            return _fail(EXIT_BAD_FRAME, f"{where}: bad frame: {type(err).__name__}: {err}")
        assert session.config is not None
        emit(config_dict(session.config))
        await session.start()
        seen = 0
        while seen < frames:
            event = await session.next_event(timeout_s)
            if isinstance(event, FrameError):
                return _fail(EXIT_BAD_FRAME, f"{where}: bad frame: {type(event).__name__}: {event}")
            if isinstance(event, DataFrame):
                emit(data_dict(event))
                seen += 1
            elif isinstance(event, ConfigFrame):
                emit(config_dict(event))
    except StaleStreamError:
        return _fail(EXIT_TIMEOUT, f"{where}: no data frame in {timeout_s:g} s after DATA ON ({seen} received)")
    except PdcError as err:
        return _fail(EXIT_CONNECT, f"{where}: {err}")
    finally:
        await session.close()
    return EXIT_OK


def open_failure(err: PdcError, endpoint: PmuEndpoint, timeout_s: float) -> tuple[int, str]:
    """The exit status and the one-line reason for a session that did not get its configuration.

    Says what the peer did: nothing (then the IDCODE is the usual suspect: a PMU ignores commands to
    another, C37.118.2-2011 6.6), frames of another IDCODE or configuration, the probe's own commands sent
    back (an echo), bytes that are not C37.118 at all (shown), or a closed connection.
    """
    where = f"{endpoint.host}:{endpoint.port}"
    request = f"the CFG-{endpoint.cfg_version} request with IDCODE {endpoint.idcode}"
    got = err.received
    if isinstance(err, PdcConnectError):
        return EXIT_CONNECT, str(err)
    if isinstance(err, ConnectionClosedError):
        if got.requests == 0:
            said = f"{where}: the peer closed the connection before {request} was sent"
        else:
            said = f"{where}: the peer closed the connection after {request}"
        if "closed" not in str(err):  # a reset: keep the system's reason
            said += f" ({err})"
        return EXIT_CONNECT, said + (f"; it had sent {_received_text(got)}" if got.nbytes else ", sending nothing")
    if not isinstance(err, PdcTimeoutError):
        return EXIT_CONNECT, f"{where}: {err}"
    if got.nbytes == 0:
        return EXIT_TIMEOUT, (
            f"{where}: no answer in {timeout_s:g} s to {request} (the PMU may expect another IDCODE: --id N)"
        )
    frames = [(kind, idcode) for kind, idcode, _ in got.frames]
    if frames and all(kind == "command" for kind, _ in frames) and not err.frame_errors:
        return EXIT_BAD_FRAME, (
            f"{where}: received {got.nbytes} bytes in {timeout_s:g} s, all of them command frames like the probe's "
            "own requests (a PMU sends none: an echo?); is this a PMU port?"
        )
    others = [(kind, idcode) for kind, idcode in frames if kind != "command"]
    if others:
        listed = ", ".join(f"{kind} frames from IDCODE {idcode}" for kind, idcode in others)
        hint = ""
        ids = sorted({idcode for _, idcode in others if idcode != endpoint.idcode})
        versions = sorted({kind[-1] for kind, _ in others if kind.startswith("CFG-") and kind[-1].isdigit()})
        if ids:
            hint = f" (the PMU's IDCODE may be {' or '.join(map(str, ids))}: --id {ids[0]})"
        elif versions:
            hint = f" (the PMU may send CFG-{versions[0]} only: --cfg {versions[0]})"
        return EXIT_TIMEOUT, f"{where}: no answer in {timeout_s:g} s to {request}; received {listed}{hint}"
    return EXIT_BAD_FRAME, f"{where}: received {_received_text(got, err.frame_errors)}; is this a PMU port?"


def _received_text(got: Received, errors: list[FrameError] | None = None) -> str:
    """``37 bytes that are not C37.118 frames (SizeError: ...): 'ab 12 ...' ("text")`` for a message."""
    shown = " ".join(f"{b:02x}" for b in got.head[:16]) + (" …" if got.nbytes > 16 else "")
    why = f" ({type(errors[0]).__name__}: {errors[0]})" if errors else ""
    text = got.head.decode("ascii", "replace").strip()
    printable = text and all(c.isprintable() for c in text)
    quoted = f' ("{text}{"…" if got.nbytes > len(got.head) else ""}")' if printable else ""
    return f"{got.nbytes} bytes that are not C37.118 frames{why}: '{shown}'{quoted}"


def _fail(code: int, reason: str) -> int:
    print(f"gridedge pmu probe: {reason}", file=sys.stderr, flush=True)
    return code


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("address", metavar="ADDRESS", help="tcp://host[:port] (port 4712) or tcp://host[:port]?udp=PORT")
    p.add_argument("--id", dest="idcode", type=int, default=1, help="the PMU's IDCODE (commands go to it; default 1)")
    p.add_argument("--frames", type=int, default=5, help="data frames to print, then exit (default 5)")
    p.add_argument("--cfg", type=int, choices=[1, 2, 3], default=2, help="configuration frame to ask for (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: the configuration, then each frame")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    p.set_defaults(func=cmd_probe)
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``probe`` to a ``pmu`` subcommand's subparsers (see agent/cli.py)."""
    return configure_parser(
        subparsers.add_parser(
            "probe",
            help="connect to a PMU and print what it sends",
            description="Connect to a PMU, ask for its configuration with its IDCODE (--id), print it and the "
            "first data frames decoded; when no configuration comes, say what the peer did instead.",
            epilog=EXIT_HELP,
        )
    )


def cmd_probe(args: argparse.Namespace) -> int:
    if args.frames < 0 or args.timeout <= 0:
        return _fail(EXIT_USAGE, f"--frames {args.frames} / --timeout {args.timeout}: frames >= 0, timeout > 0")
    try:
        endpoint = parse_address(args.address, args.idcode, args.cfg)
    except ProbeUsageError as err:
        return _fail(EXIT_USAGE, str(err))
    try:
        return asyncio.run(probe(endpoint, args.frames, args.timeout, args.json))
    except KeyboardInterrupt:
        return 130


def main(argv: list[str]) -> int:
    parser = configure_parser(
        argparse.ArgumentParser(prog="gridedge pmu probe", description=__doc__.split("\n")[0], epilog=EXIT_HELP)
    )
    return cmd_probe(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
