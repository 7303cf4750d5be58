"""``[[sinks]] type = "uns"``: the UNS publisher's config and its checks (brokers, rates,
record types, and that every device and tag name fits in a topic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

import msgspec

from edge.asset import AssetConfig
from edge.components import BuildContext
from edge.config import ConfigStruct
from edge.model import RECORD_TYPE_NAMES, TagRegistry
from edge.protocols.mqtt import TlsConfig
from edge.protocols.mqtt import uns as U

if TYPE_CHECKING:
    from edge.sinks.uns import UnsSink, UnsValuesOnly


class UnsSinkConfig(ConfigStruct, frozen=True):
    """``[[sinks]]`` with ``type = "uns"``: JSON latest values and records over MQTT."""

    name: str = "uns"
    brokers: list[str] = msgspec.field(default_factory=lambda: ["mqtt://127.0.0.1:1883"])
    client_id: str = ""  # default "<gateway id>-<name>"
    username: str = ""
    password_secret: str = ""
    tls: TlsConfig | None = None
    keepalive_s: int = 30
    qos: Literal[0, 1, 2] = 1  # values and status; records use max(qos, 1)
    retain_values: bool = True  # a late subscriber gets every tag's latest value
    max_rate_hz: float = 10.0  # per tag; faster changes coalesce to the latest value
    max_inflight: int = 200  # publishes awaiting the broker before values coalesce
    records: bool = True  # publish records (from the journal, own cursor)
    record_types: list[str] = msgspec.field(default_factory=lambda: list(RECORD_TYPE_NAMES))
    ack_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.brokers:
            raise ValueError("brokers must list at least one mqtt://HOST:PORT")
        for url in self.brokers:
            broker_address(url)
            if url.startswith("mqtts:") and self.tls is None:
                raise ValueError(f"brokers: {url!r} is mqtts:// but [tls] is not given")
        if not 0 < self.max_rate_hz <= 1000:
            raise ValueError("max_rate_hz must be > 0 and <= 1000 (per tag)")
        if not 1 <= self.max_inflight <= 65535:
            raise ValueError("max_inflight must be 1 to 65535")
        if self.ack_timeout_s <= 0:
            raise ValueError("ack_timeout_s must be > 0")
        unknown = sorted(set(self.record_types) - set(RECORD_TYPE_NAMES))
        if unknown:
            raise ValueError(f"record_types: unknown {', '.join(unknown)} "
                             f"(known: {', '.join(RECORD_TYPE_NAMES)})")

    def asset_problems(self, asset: AssetConfig, tags: TagRegistry) -> list[str]:
        """Every device and tag name fits in a topic, and no two tags share one."""
        problems: list[str] = []
        devices: set[str] = set()
        topics: dict[str, str] = {}
        for t in tags:
            checks = [("tag", t.name)] if t.device in devices else [("device", t.device),
                                                                    ("tag", t.name)]
            devices.add(t.device)
            found = [p for kind, name in checks if (p := U.name_problem(kind, name))]
            problems += [f"sink '{self.name}': {p} (tag {t.key!r})" for p in found]
            topic = U.join(asset.path(t.device).topic, t.device, t.name)
            if not found and topic in topics:
                problems.append(f"sink '{self.name}': tags {topics[topic]!r} and {t.key!r} "
                                f"would share the topic {topic!r}")
            topics.setdefault(topic, t.key)
        return problems

    def build(self, ctx: BuildContext) -> UnsSink | UnsValuesOnly:
        from edge.sinks.uns import UnsSink, UnsValuesOnly

        sink = UnsSink(self, ctx)
        return sink if self.records else UnsValuesOnly(sink)


def broker_address(url: str) -> tuple[str, int]:
    """(host, port) of an ``mqtt://`` or ``mqtts://`` URL; ValueError naming ``brokers``."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"brokers: {url!r} must look like mqtt://HOST:PORT")
    return u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883)
