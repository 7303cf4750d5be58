"""``[[sinks]] type = "sparkplug"``: the Sparkplug B edge node's config (checked on load).

Group, edge node, device and host ids are topic levels (no ``/ + #``); every broker URL
is ``mqtt://`` or ``mqtts://`` (the latter only with ``[tls]``). The DCMD allow-list is
checked against the sources' declared commands by check-config (``action_problems``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import msgspec

from edge.components import BuildContext
from edge.config import ConfigStruct
from edge.errors import ConfigError
from edge.model import TagRegistry
from edge.protocols.mqtt import TlsConfig
from edge.protocols.sparkplug import commands as C
from edge.protocols.sparkplug import payload as P

if TYPE_CHECKING:
    from edge.asset import AssetConfig
    from edge.sinks.sparkplug import SparkplugSink


class SparkplugSinkConfig(ConfigStruct, frozen=True):
    """``[[sinks]]`` with ``type = "sparkplug"``: a Sparkplug B edge node (live + durable)."""

    # "" (both): from [asset], the node is the lowest level, the group the ones above
    # joined by ':' (edge.asset.AssetConfig.sparkplug_ids)
    group_id: str = ""
    edge_node_id: str = ""
    name: str = "sparkplug"
    brokers: list[str] = msgspec.field(default_factory=lambda: ["mqtt://127.0.0.1:1883"])
    primary_host_id: str = ""  # "" publishes births without waiting for a host's STATE
    client_id: str = ""  # default "<group_id>-<edge_node_id>"
    username: str = ""
    password_secret: str = ""
    tls: TlsConfig | None = None
    keepalive_s: int = 30
    ack_topic: str = ""  # QoS 1 marker; default "edge-gateway/<group>/<node>/ack"
    ack_timeout_s: float = 10.0
    # DCMDs a host may send: each runs one declared command of a source (the names
    # interlocks use); everything else is refused, and every DCMD is journaled.
    commands: list[C.CommandConfig] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("group_id", "edge_node_id"):
            if getattr(self, key):
                P.check_id(key, getattr(self, key))
        if bool(self.group_id) != bool(self.edge_node_id):
            raise ValueError("group_id and edge_node_id are given together, or neither "
                             "(then both come from [asset])")
        if self.primary_host_id:
            P.check_id("primary_host_id", self.primary_host_id)
        if not self.brokers:
            raise ValueError("brokers must list at least one mqtt://HOST:PORT")
        for url in self.brokers:
            parse_broker(url)
            if url.startswith("mqtts:") and self.tls is None:
                raise ValueError(f"brokers: {url!r} is mqtts:// but [tls] is not given")
        if self.ack_timeout_s <= 0:
            raise ValueError("ack_timeout_s must be > 0")

    def asset_problems(self, asset: AssetConfig, tags: TagRegistry) -> list[str]:
        if self.group_id or asset.sparkplug_ids() is not None:
            return []
        return [f"sink '{self.name}': group_id and edge_node_id are not set and [asset] "
                "has fewer than two levels to take them from (set both, or [asset] "
                "enterprise, site, ...)"]

    def build(self, ctx: BuildContext) -> SparkplugSink:
        from edge.sinks.sparkplug import SparkplugSink
        ids = ((self.group_id, self.edge_node_id) if self.group_id
               else ctx.asset.sparkplug_ids())
        if ids is None:
            raise ConfigError(self.asset_problems(ctx.asset, ctx.tags)[0])
        return SparkplugSink(msgspec.structs.replace(self, group_id=ids[0],
                                                     edge_node_id=ids[1]), ctx)

    def action_problems(self, actions: Mapping[str, frozenset[str]],
                        tags: TagRegistry) -> list[str]:
        """check-config: the DCMD allow-list names our devices and declared commands."""
        return C.action_problems(self.commands, {t.device for t in tags}, actions,
                                 self.name)


def parse_broker(url: str) -> tuple[str, int]:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"brokers: {url!r} must look like mqtt://HOST:PORT")
    return u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883)
