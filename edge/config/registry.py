"""The component types a config can name: ``type`` of a ``[[sources]]`` or ``[[sinks]]``
entry -> ``"module:Struct"``, and the stage sections from the one stage table.

Invariant: a struct is imported only when a config uses its type, so a protocol that is
not configured costs nothing (not even its imports) at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

from edge.errors import ConfigError
from edge.processing import STAGES

# type name -> "module:Struct". The struct lives beside the component it configures.
SOURCE_TYPES: dict[str, str] = {
    "file": "edge.sources.file.config:FileSourceConfig",
    "modbus": "edge.sources.modbus.config:ModbusSourceConfig",
    "s7": "edge.sources.s7.config:S7SourceConfig",
    "mqtt": "edge.sources.mqtt:MqttSourceConfig",
    "opcua": "edge.sources.opcua_config:OpcUaSourceConfig",
}
SINK_TYPES: dict[str, str] = {
    "mes": "edge.sinks.mes:MesSinkConfig",
    "influx": "edge.sinks.influx:InfluxSinkConfig",
    "opcua": "edge.sinks.opcua:OpcUaConfig",
    "sparkplug": "edge.sinks.sparkplug:SparkplugSinkConfig",
    "uns": "edge.sinks.uns_config:UnsSinkConfig",
    "web": "edge.web.config:WebConfig",
}
# Top-level sections owned by one component: (struct path, is a list of tables). Today
# these are the stage sections, from the one stage table.
SECTION_TYPES: dict[str, tuple[str, bool]] = {k.section: (k.config, True) for k in STAGES}


def import_struct(target: str, label: str) -> type[Any]:
    """The class named by ``"module:Name"``; a ConfigError under ``label`` when this build
    lacks it."""
    module, _, attr = target.partition(":")
    try:
        cls: type[Any] = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{label}: this build has no {target} ({exc})") from None
    return cls
