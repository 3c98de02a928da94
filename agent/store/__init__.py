"""The agent's SQLite store: readings, events and the outbox, bounded and crash-safe (docs/store.md).

errors      StoreError and its kinds
values      what a reading or an event may hold, checked and turned into a row
schema      the file: opened, checked to be ours, migrated
db          the one connection: transactions, the meta table, event rows
disk        sizes and the bound in force, the WAL, the reserve file, full-disk recovery
policy      the full policy: alarm latch, prune, drop the oldest telemetry, vacuum
outbox      seal, pending, ack
controlstate the safety envelope's operations and flags (suspensions, devices it holds)
commandstate the signed downlink's state (sequences, executed ids, keys, overrides) and the append-only audit log
store       Store, composing the above, with the write path
asyncstore  AsyncStore: the Store on one worker thread for the event loop
"""

from agent.store.asyncstore import AsyncStore
from agent.store.commandstate import AuditEntry, KeyChange, LoggedCommand, Override
from agent.store.controlstate import ControlFlag, ControlOp
from agent.store.errors import StoreCorruptError, StoreError, StoreFullError, StoreInputError
from agent.store.outbox import OutboxMessage
from agent.store.schema import APPLICATION_ID, SCHEMA_VERSION
from agent.store.store import Store, StoreStats
from agent.store.values import MAX_TEXT

__all__ = [
    "APPLICATION_ID",
    "MAX_TEXT",
    "SCHEMA_VERSION",
    "AsyncStore",
    "AuditEntry",
    "KeyChange",
    "LoggedCommand",
    "Override",
    "ControlFlag",
    "ControlOp",
    "OutboxMessage",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreInputError",
    "StoreStats",
]
