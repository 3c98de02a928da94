"""The versioned uplink/downlink message schema shared by agent/ and central/ (docs/telemetry.md)."""

from protocols.telemetry.schema import (
    SCHEMA_VERSION,
    Ack,
    Batch,
    SchemaError,
    State,
    decode_ack,
    decode_batch,
    decode_state,
    encode_ack,
    encode_batch,
    encode_state,
    topic,
)

__all__ = [
    "SCHEMA_VERSION",
    "Ack",
    "Batch",
    "SchemaError",
    "State",
    "decode_ack",
    "decode_batch",
    "decode_state",
    "encode_ack",
    "encode_batch",
    "encode_state",
    "topic",
]
