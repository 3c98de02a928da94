"""Prometheus metrics over HTTP: the ``[metrics]`` section both the agent and central parse, the table of
metric families a program exposes, and the server of ``GET /metrics``.

Why the figures are gathered in the event loop: the agent's and central's stats objects are plain
attributes and dicts that only the event loop changes. A scrape arrives on the HTTP server's thread, asks
the loop for one consistent copy of the figures (:class:`LoopCollector`: a callback the loop runs between
two of its steps, a millisecond of work) and formats it on its own thread. So nothing is locked, nothing on
the hot paths counts for Prometheus, and a scrape can never hold up the loop: a loop that does not answer
within ``GATHER_TIMEOUT_S`` fails the scrape (503), which is what a stuck agent should look like to
Prometheus. A collector that reads a file or a database (central's store figures) runs on the HTTP
thread itself, off the loop.

The server is prometheus_client's WSGI exposition (content negotiation, gzip, OpenMetrics) on a threading
``wsgiref`` server: each request on its own daemon thread, request logging off (an operator's log holds
events, not one line per scrape), IPv6 when the address is one.

``listen`` is ``host:port``; ``[::1]:9108`` for IPv6. Metrics carry no authentication: listening on every
interface (``0.0.0.0``, ``[::]``) is allowed with a warning, so the choice is made on purpose.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from protocols.configcheck import MISSING, Checker
from protocols.eventlog import EventLog

log = EventLog("metrics")

GATHER_TIMEOUT_S = 5.0  # a loop that cannot spare a millisecond in this long is stuck: the scrape fails
LISTEN_ALLOWED = 'host:port, e.g. "127.0.0.1:9108" (IPv6: "[::1]:9108"), port 1..65535'
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")  # fmt: skip
_EVERY_INTERFACE = ("0.0.0.0", "::")


# ---- configuration -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: where ``GET /metrics`` is served."""

    host: str
    port: int

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> tuple[str, int] | None:
    """``host:port`` -> (host, port), or None when it is not one (an IPv6 host in brackets)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([^:\[\]\s]+):([0-9]{1,5})", text)
    if m is None:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        return None
    if m.group(1) is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif not re.fullmatch(r"[0-9.]+", host) and not _HOSTNAME_RE.match(host):
        return None
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return None
    return host, int(port)


def parse_metrics(c: Checker, raw: Mapping[str, Any], prefix: str = "metrics") -> MetricsConfig | None:
    """The ``[metrics]`` table; None (and an issue per problem) when it cannot be used."""
    c.unknown(raw, prefix, {"listen"})
    value = raw.get("listen", MISSING)
    key = f"{prefix}.listen"
    if value is MISSING:
        c.fail(key, MISSING, f"is required when [{prefix}] is given: {LISTEN_ALLOWED}")
        return None
    where = parse_listen(value) if isinstance(value, str) else None
    if where is None:
        c.fail(key, value, f"must be {LISTEN_ALLOWED}")
        return None
    host, port = where
    if host in _EVERY_INTERFACE:
        c.warn(key, value, "serves the metrics on every interface, without authentication: prefer 127.0.0.1 or "
               "the management network's address")  # fmt: skip
    return MetricsConfig(host, port)


# ---- the families a program exposes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family: its kind (``counter`` or ``gauge``), its help text and its label names."""

    kind: str
    help: str
    labels: tuple[str, ...] = ()


class Families:
    """The figures of one scrape, family by family, checked against the program's table of ``Spec``s.

    ``add(name, value, label=value, ...)``; a family given no sample is not exposed. A name or a label not
    in the table is a programming error (KeyError, ValueError): docs/metrics.md lists the table.
    """

    def __init__(self, specs: Mapping[str, Spec]) -> None:
        self._specs = specs
        self._samples: dict[str, list[tuple[tuple[str, ...], float]]] = {}

    def add(self, name: str, value: float | bool | None, **labels: Any) -> None:
        spec = self._specs[name]
        if set(labels) != set(spec.labels):
            raise ValueError(f"{name}: labels {sorted(labels)}, the table says {list(spec.labels)}")
        if value is None:  # not known (a device never read): no sample rather than a made-up one
            return
        self._samples.setdefault(name, []).append((tuple(str(labels[k]) for k in spec.labels), float(value)))

    def metrics(self) -> list[Any]:
        """prometheus_client metric families, in the table's order."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        out: list[Any] = []
        for name, spec in self._specs.items():
            samples = self._samples.get(name)
            if not samples:
                continue
            kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = kind(name, spec.help, labels=list(spec.labels))
            for labels, value in samples:
                family.add_metric(list(labels), value)
            out.append(family)
        return out


# ---- collectors ----------------------------------------------------------------------------------------------


class GatherError(Exception):
    """The figures could not be gathered: the scrape is answered 503."""


class LoopCollector:
    """A prometheus_client collector whose ``gather`` runs in ``loop`` (see the module's docstring)."""

    def __init__(self, gather: Callable[[], Families], loop: asyncio.AbstractEventLoop,
                 timeout_s: float = GATHER_TIMEOUT_S) -> None:  # fmt: skip
        self._gather = gather
        self._loop = loop
        self._timeout_s = timeout_s

    def collect(self) -> Iterator[Any]:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # already in the loop (a test's generate_latest): no hop, it would deadlock
            yield from self._gather().metrics()
            return
        future: Any = None
        try:
            future = asyncio.run_coroutine_threadsafe(_call(self._gather), self._loop)
            families = future.result(self._timeout_s)
        except TimeoutError as err:
            future.cancel()
            raise GatherError(f"the event loop did not answer within {self._timeout_s:g} s") from err
        except Exception as err:  # a bug in gather, or the loop closed: this scrape fails, the program goes on
            raise GatherError(f"{type(err).__name__}: {err}") from err
        yield from families.metrics()


async def _call(gather: Callable[[], Families]) -> Families:
    return gather()


class ThreadCollector:
    """A collector whose ``gather`` runs on the scrape's own thread (a file, a database: off the loop)."""

    def __init__(self, gather: Callable[[], Families]) -> None:
        self._gather = gather

    def collect(self) -> Iterator[Any]:
        try:
            families = self._gather()
        except Exception as err:  # one failed scrape; the next one tries again
            raise GatherError(f"{type(err).__name__}: {err}") from err
        yield from families.metrics()


# ---- the server ----------------------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the name is the base class's)
        """No line per request: the operator's log holds events, and a scrape every 15 s is not one."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never holds up the program's exit
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


def _app(registry: Any, program: str) -> Callable[..., Iterable[bytes]]:
    from prometheus_client import make_wsgi_app

    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the metrics are at /metrics\n"]
        try:
            return metrics(environ, start_response)
        except GatherError as err:
            log.warning("metrics_scrape_failed", program=program, error=err)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{program}: cannot gather the metrics: {err}\n".encode()]

    return app


class MetricsServer:
    """``GET /metrics`` at ``config.listen`` while :meth:`run` runs (a task of the program)."""

    def __init__(self, config: MetricsConfig, program: str) -> None:
        self.config = config
        self.program = program
        self.port: int | None = None  # bound (the configured port)

    async def run(self, collectors: Callable[[asyncio.AbstractEventLoop], list[Any]]) -> None:
        """Serve until cancelled. ``collectors(loop)`` gives the program's collectors; the process's own
        figures (CPU, memory, open files: prometheus_client's ProcessCollector) are added."""
        from prometheus_client import CollectorRegistry, ProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        for collector in collectors(asyncio.get_running_loop()):
            registry.register(collector)
        ProcessCollector(registry=registry)
        host, port = self.config.host, self.config.port
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        try:
            httpd = make_server(host, port, _app(registry, self.program), server_class, _QuietHandler)
        except OSError as err:  # the supervisor retries with its backoff and logs it (task_failed)
            raise OSError(
                err.errno, f"cannot serve the metrics at {self.config.listen}: {err.strerror or err}"
            ) from err
        self.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                  name=f"{self.program}-metrics", daemon=True)  # fmt: skip
        thread.start()
        log.info("metrics_serving", program=self.program, url=f"http://{self.config.listen}/metrics")
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(httpd.shutdown)  # returns once serve_forever has seen it (<= poll_interval)
            httpd.server_close()
