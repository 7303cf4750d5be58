"""MQTT, shared by the MQTT source and any MQTT sink (Sparkplug B / UNS publisher).

``connection`` holds the broker endpoint settings (auth, TLS), client creation, the
subscribe-after-connect session and manual acknowledgement. Topic-to-tag mapping and
payload decoding stay with their user (``edge.sources.mqtt``, ``edge.sources.mqtt_payload``).
"""

from edge.protocols.mqtt.connection import (
    BrokerConfig,
    Client,
    InMessage,
    Received,
    TlsConfig,
    session,
)

__all__ = ["BrokerConfig", "Client", "InMessage", "Received", "TlsConfig", "session"]
