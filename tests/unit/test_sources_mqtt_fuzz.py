"""Property-based fuzz of MQTT message handling (decode + routing + dedup), no broker."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.components import BuildContext
from edge.config import loads
from edge.model import Quarantine, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.mqtt import MqttSource, MqttSourceConfig

CONFIG = """
[[sources]]
type = "mqtt"
name = "motors"
max_payload_bytes = 4096
[[sources.subscriptions]]
topic = "stf/+/telemetry"
device = "{1}"
devices = ["m1", "m2"]
fields = [{ path = "current_a", tag = "current_a" },
          { path = "state", tag = "state", enum = { idle = 0, running = 2 } },
          { path = "pos.mm", tag = "position_mm", required = false }]
"""


def make_source() -> MqttSource:
    cfg = loads(CONFIG).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), Path("/nonexistent"), lambda n: ""))


SRC = make_source()

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["current_a", "state", "pos", "mm", "x"]), kids, max_size=5),
    max_leaves=30,
)
_hostile = st.one_of(
    st.integers(1, 300_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 300_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(4000, 20_000).map(lambda n: b'{"current_a": 1, "x": "' + b"y" * n + b'"}'),
    st.binary(max_size=200),
    st.text(max_size=50).map(str.encode),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_hostile, _json.map(msgspec.json.encode)),
       st.sampled_from(["stf/m1/telemetry", "stf/zz/telemetry", "other/topic", "stf//"]),
       st.booleans())
def test_any_payload_becomes_samples_or_a_quarantine_with_reason(
        payload: bytes, topic: str, redelivered: bool) -> None:
    """No exception escapes handle(); a rejected payload is a Quarantine with a reason."""
    got = SRC.handle(topic, payload, 1, redelivered=redelivered)
    if isinstance(got, Quarantine):
        assert got.reason and got.where == topic and got.source == "motors"
        return
    device, tags, ts, vals = got
    assert device == "m1" and len(tags) == len(ts) == len(vals) > 0
    assert np.isfinite(vals).all()


_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(_finite, st.sampled_from(["idle", "running"]), st.none() | _finite,
       st.integers(1, 5))
def test_every_good_value_is_kept_even_when_repeated(
        current: float, state: str, pos: float | None, repeats: int) -> None:
    """A valid message gives exactly its values, every time it is sent (no identity)."""
    src = make_source()
    doc: dict[str, object] = {"current_a": current, "state": state}
    if pos is not None:
        doc["pos"] = {"mm": pos}
    payload = msgspec.json.encode(doc)
    want = [current, {"idle": 0.0, "running": 2.0}[state]] + ([pos] if pos is not None else [])
    for i in range(repeats):
        got = src.handle("stf/m2/telemetry", payload, i)
        assert not isinstance(got, Quarantine), got
        _, tags, _, vals = got
        assert len(tags) == len(want) and vals.tolist() == want
