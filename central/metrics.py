"""Central's Prometheus metrics (docs/metrics.md): ``[metrics] listen = "127.0.0.1:9109"`` serves them.

Two kinds of figures:

- The ingest's, from the workers of this process, read in the event loop at scrape time: messages received,
  stored, duplicate and refused, items stored per stream, acks, the queue to the store, and per site the
  newest item's time (kept by :class:`IngestTally` as each flush is stored: one ``max`` over the items of a
  message already decoded), from which the lag is reckoned. These counters start at 0 with the process.
- The store's, read on the scrape's thread with a read-only connection of its own (SQLite's WAL and
  PostgreSQL's MVCC: it never waits on the writers), at most once every ``STORE_REFRESH_S`` however often
  Prometheus scrapes: the store's size (the SQLite file and its WAL, or the PostgreSQL database),
  and per site the missing sequence numbers (the gaps ``gridedge central gaps`` lists, counted) and when its
  last message arrived. That query reads the ``messages`` index whole, so it is paced, not run per scrape.

Lag: now minus the newest item time a worker of this process stored for the site (items carry the time they
were measured, so this is how far behind central's picture of the site is); a site no worker has heard from
since this process started has no lag sample, but its last message's age comes from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols.eventlog import EventLog
from protocols.metrics import Families, LoopCollector, MetricsConfig, MetricsServer, Spec, ThreadCollector
from protocols.telemetry.schema import Batch

if TYPE_CHECKING:
    from central.ingest import CentralWorker

log = EventLog("central.metrics")

P = "gridedge_central_"
STORE_REFRESH_S = 10.0  # the store's figures are read at most this often (a scan of the messages index)
RETRY_MAX_S = 60.0  # longest pause between attempts to listen (a port held by another program)
_TS = itemgetter("ts")
_NO_TS = frozenset({"intervals"})  # streams whose items carry no measurement time (an interval has start and end)

SPECS: dict[str, Spec] = {
    P + "workers": Spec("gauge", "Ingest workers in this process"),
    P + "mqtt_connected": Spec("gauge", "Workers whose MQTT session is up"),
    P + "mqtt_connects_total": Spec("counter", "MQTT sessions established, all workers"),
    P + "messages_received_total": Spec("counter", "Data messages that reached the workers, valid or not"),
    P + "messages_stored_total": Spec("counter", "New messages committed to the store", ("stream",)),
    P + "items_stored_total": Spec(
        "counter", "Items (readings, events, intervals...) in the new messages stored", ("stream",)
    ),  # fmt: skip
    P + "messages_duplicate_total": Spec(
        "counter", "Messages whose msg_id was already stored (acked again, nothing stored)"
    ),  # fmt: skip
    P + "messages_refused_total": Spec(
        "counter",
        "Messages not stored and not acked, by reason: invalid "
        "(malformed, or refused by the store), queue_full (the agent resends)",
        ("reason",),
    ),  # fmt: skip
    P + "store_errors_total": Spec("counter", "Messages whose commit failed (queued again)"),
    P + "acks_sent_total": Spec("counter", "Ack messages the broker accepted"),
    P + "ack_failures_total": Spec("counter", "Ack messages that could not be sent"),
    P + "queue_messages": Spec("gauge", "Messages waiting to be stored"),
    P + "site_lag_seconds": Spec(
        "gauge", "Now minus the newest item time stored for the site by this process", ("site",)
    ),  # fmt: skip
    P + "site_gap_messages": Spec(
        "gauge", "Sequence numbers missing in the store, all streams of the site", ("site",)
    ),  # fmt: skip
    P + "site_last_message_age_seconds": Spec("gauge", "Time since the site's last message was stored", ("site",)),
    P + "store_size_bytes": Spec("gauge", "Size of the store's files (database and WAL)"),
    P + "store_read_seconds": Spec("gauge", "Time the last read of the store's figures took"),
}

# per site and stream: messages, distinct sequence numbers, the highest, the latest arrival
_STORE_SQL = """
SELECT site, stream, COUNT(DISTINCT seq), MAX(seq), MAX(received) FROM messages GROUP BY site, stream
"""


class IngestTally:
    """What a worker stored, per stream, and the newest item time per site: kept by the worker's flush."""

    __slots__ = ("items", "messages", "newest")

    def __init__(self) -> None:
        self.messages: Counter[str] = Counter()
        self.items: Counter[str] = Counter()
        self.newest: dict[str, float] = {}

    def stored(self, batch: Batch) -> None:
        self.messages[batch.stream] += 1
        self.items[batch.stream] += len(batch.items)
        if batch.items and batch.stream not in _NO_TS:
            try:
                ts = float(max(map(_TS, batch.items)))
            except (KeyError, TypeError, ValueError):  # an item kind without a time: no lag from it, never a failure
                return
            if ts > self.newest.get(batch.site, float("-inf")):
                self.newest[batch.site] = ts


def gather(workers: Sequence[CentralWorker], now: float) -> Families:
    """The ingest's figures now (in the event loop)."""
    f = Families(SPECS)
    f.add(P + "workers", len(workers))
    f.add(P + "mqtt_connected", sum(w.session.connected.is_set() for w in workers))
    f.add(P + "mqtt_connects_total", sum(w.session.stats.connects for w in workers))
    total: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    items: Counter[str] = Counter()
    newest: dict[str, float] = {}
    for w in workers:
        total.update({k: v for k, v in w.stats_dict().items() if isinstance(v, int)})
        messages.update(w.tally.messages)
        items.update(w.tally.items)
        for site, ts in w.tally.newest.items():
            newest[site] = max(ts, newest.get(site, ts))
    f.add(P + "messages_received_total", total["received"])
    for stream in sorted(messages):
        f.add(P + "messages_stored_total", messages[stream], stream=stream)
        f.add(P + "items_stored_total", items[stream], stream=stream)
    f.add(P + "messages_duplicate_total", total["duplicates"])
    f.add(P + "messages_refused_total", total["invalid"], reason="invalid")
    f.add(P + "messages_refused_total", total["dropped"], reason="queue_full")
    f.add(P + "store_errors_total", total["store_errors"])
    f.add(P + "acks_sent_total", total["acks_sent"])
    f.add(P + "ack_failures_total", total["ack_failures"])
    f.add(P + "queue_messages", sum(w.queued for w in workers))
    for site, ts in sorted(newest.items()):
        f.add(P + "site_lag_seconds", max(0.0, now - ts), site=site)
    return f


class StoreFigures:
    """The store's figures, read on the scrape's thread at most once every ``refresh_s``; ``target`` is the SQLite
    file or the PostgreSQL URL (``CentralConfig.store_target``)."""

    def __init__(self, target: Path | str, refresh_s: float = STORE_REFRESH_S,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.url = target if isinstance(target, str) else None
        self.db_path = None if isinstance(target, str) else Path(target)
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()  # two scrapes at once: one reads, the other waits for its figures
        self._read_at: float | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._read_s = 0.0
        self._size = 0

    def _read(self) -> None:
        started = time.monotonic()
        if self.url is not None:
            import psycopg  # only a central on PostgreSQL loads it

            with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as pg:
                pg.read_only = True
                self._rows = pg.execute(_STORE_SQL).fetchall()
                self._size = int(pg.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        else:
            # read-only, its own connection: a scrape can neither write nor hold the writers' lock
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0)
            try:
                self._rows = db.execute(_STORE_SQL).fetchall()
            finally:
                db.close()
        self._read_s = time.monotonic() - started

    def gather(self) -> Families:
        f = Families(SPECS)
        if self.db_path is not None:
            f.add(P + "store_size_bytes", _size(self.db_path))
            if not self.db_path.exists():  # no worker has opened it yet
                return f
        now = self._clock()
        with self._lock:
            if self._read_at is None or now - self._read_at >= self.refresh_s:
                self._read()
                self._read_at = now
            rows, read_s, size = self._rows, self._read_s, self._size
        if self.url is not None:
            f.add(P + "store_size_bytes", size)
        gaps: Counter[str] = Counter()
        last: dict[str, float] = {}
        for site, _stream, distinct, highest, received in rows:
            gaps[site] += max(0, int(highest) - int(distinct))  # sequence numbers start at 1 (central/store.py)
            last[site] = max(float(received), last.get(site, float("-inf")))
        for site in sorted(last):
            f.add(P + "site_gap_messages", gaps[site], site=site)
            f.add(P + "site_last_message_age_seconds", max(0.0, now - last[site]), site=site)
        f.add(P + "store_read_seconds", read_s)
        return f


def _size(db: Path) -> int:
    total = 0
    for path in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):  # no WAL between two checkpoints, or no file yet
            total += path.stat().st_size
    return total


async def serve(config: MetricsConfig, workers: Sequence[CentralWorker], store: Path | str,
                clock: Callable[[], float] = time.time) -> None:  # fmt: skip
    """Serve the metrics until cancelled; a port that cannot be had is retried with a growing pause (central's
    ingest goes on meanwhile: metrics are never a reason to stop storing)."""
    figures = StoreFigures(store, clock=clock)
    pause = 1.0
    while True:
        server = MetricsServer(config, "central")
        try:
            await server.run(
                lambda loop: [LoopCollector(lambda: gather(workers, clock()), loop), ThreadCollector(figures.gather)]
            )
        except OSError as err:
            log.error("central_metrics_failed", listen=config.listen, error=err, retry_in_s=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_S)


__all__ = ["SPECS", "STORE_REFRESH_S", "IngestTally", "StoreFigures", "gather", "serve"]
