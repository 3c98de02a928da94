"""The versioned uplink/downlink message schema shared by agent/ and central/ (docs/telemetry.md)."""

from protocols.telemetry.schema import (
    CONTROL_KIND,
    DATA_STREAMS,
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
    "CONTROL_KIND",
    "DATA_STREAMS",
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
