"""OPC-UA client source configuration: endpoint, security, login, groups of tags.

A group is either a subscription (``mode = "subscribe"``: the server samples each tag at
its sampling interval and reports changes every ``publishing_interval_ms``) or a polling
group (``mode = "poll"``: one Read of every tag of the group every ``poll_interval_ms``).

Every mistake is a ``ValueError`` raised at load time, which the config loader turns into
a ``ConfigError`` naming the source and the key (``source 'press': group 'fast': tag
'temp': node_id ...``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import msgspec
from asyncua import ua

from edge.components import BuildContext
from edge.config import ConfigStruct
from edge.model import DataType, TagRegistry

if TYPE_CHECKING:
    from edge.sources.opcua import OpcUaSource

SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep",
                         "Aes256_Sha256_RsaPss"]


# One Literal (not a union of two): check-config lists every valid value of a wrong one
# ("float64[4]": arrays are no type of ours).
TagType = Literal[DataType, "text"]


class OpcUaTagConfig(ConfigStruct, frozen=True):
    name: str  # our tag name: <device>/<name>
    node_id: str  # the server's node id, e.g. "ns=3;s=Line1.Press.Temp"
    unit: str = ""
    # Our data type (every number travels as float64). "text": a String, LocalizedText or
    # enumeration node, journaled as text_value records (the enumeration's names) when it
    # changes, in a subscription or a polling group alike. An array node is refused at
    # its first value (Bad, a quarantine record).
    type: TagType = "float64"
    sampling_interval_ms: float | None = None  # default: the group's
    queue_size: int = 1  # server-side queue per monitored item
    deadband: Literal["none", "absolute", "percent"] = "none"
    deadband_value: float = 0.0  # absolute: in the tag's unit; percent: of its EURange
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError("name must be non-empty and without '/'")
        try:
            ua.NodeId.from_string(self.node_id)
        except (ValueError, ua.UaStringParsingError) as exc:
            raise ValueError(f"node_id {self.node_id!r} is not a node id ({exc})") from None
        if self.sampling_interval_ms is not None and not (
                math.isfinite(self.sampling_interval_ms) and self.sampling_interval_ms >= 0):
            raise ValueError("sampling_interval_ms must be >= 0")
        if not 1 <= self.queue_size <= 10_000:
            raise ValueError("queue_size must be 1..10000")
        if not (math.isfinite(self.deadband_value) and self.deadband_value >= 0):
            raise ValueError("deadband_value must be a finite number >= 0")
        if self.deadband == "percent" and self.deadband_value > 100:
            raise ValueError("deadband_value must be 0..100 for a percent deadband")
        if self.type == "text" and (self.deadband != "none" or self.low is not None
                                    or self.high is not None or self.unit):
            raise ValueError("a text tag takes no deadband, low, high or unit")
        if self.deadband == "none" and self.deadband_value:
            raise ValueError("deadband_value needs deadband = 'absolute' or 'percent'")


class OpcUaCommandConfig(ConfigStruct, frozen=True):
    """A declared command: writing ``value`` (as ``type``) to ``node_id`` (e.g. a stop
    bit), or calling the PLC's ``method`` on its ``object`` with ``arguments`` (typed by
    the method's own InputArguments)."""

    action: str
    node_id: str = ""  # a write: the variable
    value: float | bool = True
    type: DataType = "bool"
    method: str = ""  # a call: the method's node id, e.g. "ns=3;s=Line1.Press.Halt"
    object: str = ""  # ... on this object; empty: the object the method is a component of
    arguments: list[str | float | bool] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.action:
            raise ValueError("action must not be empty")
        if bool(self.node_id) == bool(self.method):
            raise ValueError("give either node_id (a write) or method (a call)")
        if self.node_id and (self.object or self.arguments):
            raise ValueError("object and arguments go with method, not node_id")
        for key in ("node_id", "method", "object"):
            text = getattr(self, key)
            if not text:
                continue
            try:
                ua.NodeId.from_string(text)
            except (ValueError, ua.UaStringParsingError) as exc:
                raise ValueError(f"{key} {text!r} is not a node id ({exc})") from None
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError("value must be finite")
        if self.type != "bool" and isinstance(self.value, bool):
            raise ValueError(f"value must be a number for type '{self.type}'")
        if self.type not in ("bool", "float32", "float64") and self.value != int(self.value):
            raise ValueError(f"value must be a whole number for type '{self.type}'")
        if any(isinstance(a, float) and not math.isfinite(a) for a in self.arguments):
            raise ValueError("arguments must be finite")


class OpcUaGroupConfig(ConfigStruct, frozen=True):
    name: str
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval_ms: float = 500.0  # subscribe: how often the server reports
    sampling_interval_ms: float = 250.0  # subscribe: default per tag
    poll_interval_ms: float = 1000.0  # poll: one Read of the group this often
    tags: list[OpcUaTagConfig] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("publishing_interval_ms", "poll_interval_ms"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 10):
                raise ValueError(f"{key} must be >= 10 ms")
        if not (math.isfinite(self.sampling_interval_ms) and self.sampling_interval_ms >= 0):
            raise ValueError("sampling_interval_ms must be >= 0")
        if not self.tags:
            raise ValueError("tags must list at least one tag")
        if self.mode == "poll":
            for t in self.tags:
                if t.deadband != "none" or t.sampling_interval_ms is not None:
                    raise ValueError(f"tag '{t.name}': deadband and sampling_interval_ms "
                                     "apply to mode = 'subscribe' only")


class OpcUaSourceConfig(ConfigStruct, frozen=True):
    name: str
    endpoint: str  # opc.tcp://host:port[/path]
    device: str = ""  # default: the source's name
    security_policy: SecurityPolicy = "None"
    security_mode: SecurityMode = "None"
    # Client certificate (DER) and key (PEM); empty: generated into <state_dir>/opcua-client/.
    certificate: str = ""
    private_key: str = ""
    server_certificate: str = ""  # pinned server certificate (DER); empty: trust the endpoint's
    user: str = ""  # empty: anonymous
    password_secret: str = ""  # name of the secret holding the user's password
    timeout_s: float = 5.0  # per request
    # The server must answer (data or a keepalive) at least this often; a subscription or
    # link silent for two of these is declared lost and the session is rebuilt.
    keepalive_s: float = 2.0
    session_timeout_s: float = 60.0
    backoff_max_s: float = 5.0
    # After a reconnect, read the gap's values from the server's history (tags whose node
    # grants HistoryRead), at most the last backfill_max_s seconds and backfill_max_values
    # values per tag; emitted before the live values, each value once.
    backfill: bool = True
    backfill_max_s: float = 3600.0
    backfill_max_values: int = 100_000
    groups: list[OpcUaGroupConfig] = msgspec.field(default_factory=list)
    commands: list[OpcUaCommandConfig] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.endpoint.startswith("opc.tcp://"):
            raise ValueError("endpoint must start with opc.tcp://")
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError("security_policy and security_mode must both be 'None' or "
                             "neither")
        if bool(self.certificate) != bool(self.private_key):
            raise ValueError("certificate and private_key go together")
        if self.password_secret and not self.user:
            raise ValueError("password_secret needs user")
        if not 1 <= self.backfill_max_values <= 10_000_000:
            raise ValueError("backfill_max_values must be 1..10000000")
        for key in ("timeout_s", "keepalive_s", "session_timeout_s", "backoff_max_s",
                    "backfill_max_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be > 0")
        if self.keepalive_s < 0.1:
            raise ValueError("keepalive_s must be >= 0.1")
        if not self.groups:
            raise ValueError("groups must list at least one group")
        seen_groups: set[str] = set()
        seen_tags: set[str] = set()
        for g in self.groups:
            if g.name in seen_groups:
                raise ValueError(f"groups: name '{g.name}' is used twice")
            seen_groups.add(g.name)
            for t in g.tags:
                if t.name in seen_tags:
                    raise ValueError(f"group '{g.name}': tag '{t.name}' is used twice")
                seen_tags.add(t.name)
        actions = [c.action for c in self.commands]
        if len(set(actions)) != len(actions):
            raise ValueError("commands: an action is defined twice")

    @property
    def device_name(self) -> str:
        return self.device or self.name

    def declare_tags(self, tags: TagRegistry) -> None:
        for g in self.groups:
            for t in g.tags:
                if t.type == "text":
                    continue  # a text tag's values are TextValue records, not samples
                tags.add(self.device_name, t.name, unit=t.unit, dtype=t.type, low=t.low,
                         high=t.high, description=t.description or t.node_id)

    def build(self, ctx: BuildContext) -> OpcUaSource:
        from edge.sources.opcua import OpcUaSource

        return OpcUaSource(self, ctx)

    def actions(self) -> frozenset[str]:
        """The commands this PLC takes (its ``commands`` table), for interlock checks."""
        return frozenset(c.action for c in self.commands)

    def measurement_devices(self) -> frozenset[str]:
        """OPC-UA tags are samples, never ``CmmReading``s."""
        return frozenset()
