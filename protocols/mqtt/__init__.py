"""The uplink's MQTT session over paho-mqtt: reconnect with backoff, re-subscribe, QoS 1 acknowledgements."""

from __future__ import annotations

from protocols.mqtt.session import (
    ConnectionLost,
    MqttError,
    MqttSession,
    PublishRefused,
    SessionConfig,
    SessionStats,
)

__all__ = ["ConnectionLost", "MqttError", "MqttSession", "PublishRefused", "SessionConfig", "SessionStats"]
