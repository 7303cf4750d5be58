"""UNS sink: config errors, topic-level checks and the JSON payloads (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.app import split_sinks
from edge.asset import AssetConfig, AssetLevels
from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import Quality, SampleBatch, SpcViolation, TagRegistry
from edge.protocols.mqtt import uns as U
from edge.runtime.metrics import Metrics
from edge.sinks.uns_config import UnsSinkConfig


@pytest.mark.parametrize(("body", "message"), [
    ('brokers = ["http://x"]', "must look like mqtt://HOST:PORT"),
    ("brokers = []", "at least one"),
    ("qos = 3", "qos"),
    ("max_rate_hz = 0", "max_rate_hz must be > 0"),
    ("max_inflight = 0", "max_inflight must be 1 to 65535"),
    ('record_types = ["spc"]', "record_types: unknown spc"),
    ('brokers = ["mqtts://h:8883"]', "[tls] is not given"),
])
def test_bad_config_names_the_sink_and_key(body: str, message: str) -> None:
    """Each mistake is a config error naming the sink."""
    with pytest.raises(ConfigError) as info:
        loads(f'[[sinks]]\ntype = "uns"\nname = "u"\n{body}\n')
    assert "sink 'u'" in str(info.value) and message in str(info.value)


def test_device_and_tag_names_must_fit_in_a_topic() -> None:
    """A device or tag name with '+', '#' or an empty level, or two tags on one topic,
    is reported at check-config; a '/' in a device name only adds levels."""
    tags = TagRegistry()
    tags.add("stf/motor1", "current")
    tags.add("x/etch1", "t")
    tags.add("etch1", "t")  # moved to site "x": e/x/etch1/t as well
    tags.add("p+1", "x")
    tags.add("etch1", "a//b")
    asset = AssetConfig(enterprise="e", devices={"etch1": AssetLevels(site="x")})
    problems = UnsSinkConfig(name="u").asset_problems(asset, tags)
    assert problems == [
        "sink 'u': tags 'x/etch1/t' and 'etch1/t' would share the topic 'e/x/etch1/t'",
        "sink 'u': device 'p+1' holds '+': MQTT topics cannot carry it (tag 'p+1/x')",
        "sink 'u': tag 'a//b' would make an empty MQTT topic level (a leading, trailing "
        "or double '/') (tag 'etch1/a//b')",
    ]


def test_value_payloads() -> None:
    """Numbers, integers, booleans and a Bad sample (null value, the reason as quality)."""
    assert json.loads(U.value_payload(1.5, 0, 2_000_000, "float64", "mm")) == {
        "value": 1.5, "quality": "good", "ts": 2, "unit": "mm"}
    assert json.loads(U.value_payload(7.0, 0, 0, "int32", ""))["value"] == 7
    assert json.loads(U.value_payload(1.0, 0, 0, "bool", ""))["value"] is True
    bad = json.loads(U.value_payload(float("nan"), Quality.BAD_TIMEOUT, 0, "float64", ""))
    assert bad == {"value": None, "quality": "bad_timeout", "ts": 0}
    assert json.loads(U.value_payload(1.0, 0x3F, 0, "float64", ""))["quality"] == "good"
    assert json.loads(U.value_payload(1.0, 0xC5, 0, "float64", ""))["quality"] == "bad"


def test_record_payload_and_topic() -> None:
    """A record's fields, its stable id and ms timestamp; NaN becomes null."""
    rec = SpcViolation(5_000_000, "etch1/t", "rule1", float("nan"), 0.0, 1.0)
    doc = json.loads(U.record_payload(rec, "gw-1-0"))
    assert doc["id"] == "gw-1-0" and doc["ts"] == 5 and doc["value"] is None
    assert doc["type"] == "spc_violation" and doc["rule"] == "rule1"
    assert U.record_topic("a/b", "etch1", rec) == "a/b/etch1/records/spc_violation"
    assert U.record_topic("", "etch1", rec) == "etch1/records/spc_violation"


def test_publish_coalesces_without_a_broker(tmp_path: Path) -> None:
    """publish only stores the latest sample per tag (the last in a batch wins) and
    ignores tag ids it does not know."""
    tags = TagRegistry()
    tags.add("etch1", "t")
    ctx = BuildContext("gw", tags, Metrics(), tmp_path, lambda n: n)
    sink = UnsSinkConfig().build(ctx)
    sink.publish(SampleBatch([0, 0, 9], [1, 2, 3], [1.0, 2.0, 3.0]), [])
    assert sink.values._value.tolist() == [2.0] and sink.values._pending.tolist() == [True]
    assert sink.status_topic == "gw/status"


def test_records_off_builds_a_live_sink_only(tmp_path: Path) -> None:
    """records = false: no journal cursor (not a durable sink), values still published."""
    ctx = BuildContext("gw", TagRegistry(), Metrics(), tmp_path, lambda n: n)
    built = UnsSinkConfig(records=False).build(ctx)
    durable, live = split_sinks([built])
    assert durable == [] and live == [built]
    durable, live = split_sinks([UnsSinkConfig().build(ctx)])
    assert len(durable) == len(live) == 1
