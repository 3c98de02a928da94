"""MQTT: the session over paho-mqtt (reconnect with backoff, re-subscribe, QoS 1 acknowledgements) and the
broker section the agent and central both configure it from (``config``)."""

from protocols.mqtt.config import BrokerConfig, BrokerUrl, parse_broker
from protocols.mqtt.session import (
    ConnectionLost,
    MqttError,
    MqttSession,
    PublishRefused,
    SessionConfig,
    SessionStats,
)

__all__ = ["BrokerConfig", "BrokerUrl", "ConnectionLost", "MqttError", "MqttSession", "PublishRefused",
           "SessionConfig", "SessionStats", "parse_broker"]  # fmt: skip
