"""Unit tests of MQTT payload extraction and topic routing (no sockets)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import CmmReading, Quarantine, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.mqtt import MqttSource, MqttSourceConfig
from edge.sources.mqtt_payload import FieldSpec, PayloadError, extract

FIELDS = [FieldSpec(("current_a",)), FieldSpec(("state",), enum={"idle": 0, "running": 2}),
          FieldSpec(("position_mm",), required=False)]
TS = 1_795_255_200.5


def ex(doc: object, *, batched: bool = False, ts: tuple[str, ...] | None = ("ts",)) -> object:
    return extract(json.dumps(doc).encode(), FIELDS, ts_path=ts, tz=None, ts_unit="auto",
                   batched=batched, arrival_ns=7)


def test_single_message_gives_one_sample_per_present_field() -> None:
    """current_a, an enum state and an absent optional field give two samples at ts."""
    got = ex({"ts": TS, "current_a": 1.2, "state": "running", "position_mm": None})
    assert got.field_index.tolist() == [0, 1]  # type: ignore[attr-defined]
    assert got.value.tolist() == [1.2, 2.0]  # type: ignore[attr-defined]
    assert set(got.ts_ns.tolist()) == {1_795_255_200_500_000_000}  # type: ignore[attr-defined]


def test_batched_arrays_give_one_sample_per_element() -> None:
    """Equal arrays give n samples per field; optional nulls are dropped, not invented."""
    got = ex({"ts": [TS, TS + 0.1], "current_a": [1.0, 1.1], "state": ["idle", "running"],
              "position_mm": [None, 5.0]}, batched=True)
    assert got.field_index.tolist() == [0, 0, 1, 1, 2]  # type: ignore[attr-defined]
    assert got.value.tolist() == [1.0, 1.1, 0.0, 2.0, 5.0]  # type: ignore[attr-defined]


def test_arrival_time_when_no_ts_field() -> None:
    """Without ts_field the arrival time stamps the samples."""
    got = ex({"current_a": 1.0, "state": "idle"}, ts=None)
    assert set(got.ts_ns.tolist()) == {7}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("doc", "batched", "reason"),
    [
        ({"ts": TS, "current_a": None, "state": "idle"}, False, "missing field 'current_a'"),
        ({"ts": TS, "current_a": "x", "state": "idle"}, False, "not a number in 'current_a': 'x'"),
        ({"ts": "2026-11-21T10:00:00", "current_a": 1, "state": "idle"}, False,
         "timestamp without zone"),
        ({"ts": TS, "current_a": 1, "state": "broken"}, False,
         "not a number in 'state': 'broken'"),
        ([1, 2], False, "payload is not a JSON object"),
        ({"ts": [TS], "current_a": [1.0, 2.0], "state": ["idle"]}, True,
         "array 'state' has 1 items, expected 2"),
        ({"ts": [TS, TS], "current_a": [None, 2.0], "state": ["idle"] * 2}, True,
         "missing field 'current_a'"),
    ],
)
def test_bad_payloads_raise_payload_error_with_reason(doc: object, batched: bool,
                                                      reason: str) -> None:
    """Each bad payload is rejected whole with a readable reason."""
    with pytest.raises(PayloadError) as err:
        ex(doc, batched=batched)
    assert err.value.reason == reason


def test_garbage_bytes_are_not_json() -> None:
    """Binary garbage is rejected as not JSON."""
    with pytest.raises(PayloadError, match="not JSON"):
        extract(b"\x00\xffgarbage{", FIELDS, ts_path=None, tz=dt.UTC, ts_unit="auto",
                batched=False, arrival_ns=0)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["ts", "current_a", "state", "position_mm", "x"]), kids, max_size=5),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=100),
                 _json.map(msgspec.json.encode)),
       st.booleans(), st.booleans())
def test_fuzz_payload_accepted_or_rejected_with_reason(payload: bytes, batched: bool,
                                                       with_ts: bool) -> None:
    """Any bytes give samples or a PayloadError with a reason; nothing else is raised."""
    try:
        got = extract(payload, FIELDS, ts_path=("ts",) if with_ts else None, tz=None,
                      ts_unit="auto", batched=batched, arrival_ns=1)
    except PayloadError as exc:
        assert exc.reason and exc.kind
        return
    assert len(got.field_index) == len(got.ts_ns) == len(got.value)
    assert np.isfinite(got.value).all()


CONFIG = """
[[sources]]
type = "mqtt"
name = "motors"
[[sources.subscriptions]]
topic = "stf/+/+/telemetry"
device = "{1}/{2}"
devices = ["conveyor/belt"]
ts_field = "ts"
fields = [{ path = "current_a", tag = "current_a", unit = "A" }]
"""


def source(tmp: Path) -> MqttSource:
    cfg = loads(CONFIG).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), tmp, lambda n: ""))


def test_topic_routes_to_device_tags_and_unknown_device_is_quarantined(tmp_path: Path) -> None:
    """A wildcard topic names the device; a device not declared is quarantined."""
    src = source(tmp_path)
    ok = src.handle("stf/conveyor/belt/telemetry", b'{"ts": 1795255200, "current_a": 1.5}', 0)
    assert not isinstance(ok, Quarantine) and ok[0] == "conveyor/belt"
    bad = src.handle("stf/hbw/belt/telemetry", b'{"ts": 1795255200, "current_a": 1.5}', 0)
    assert isinstance(bad, Quarantine)
    assert bad.reason == "unknown device 'hbw/belt'" and bad.where == "stf/hbw/belt/telemetry"


def test_duplicate_message_is_quarantined(tmp_path: Path) -> None:
    """The same payload twice on a topic is kept once; the copy is quarantined."""
    src = source(tmp_path)
    msg = b'{"ts": 1795255200, "current_a": 1.5}'
    assert not isinstance(src.handle("stf/conveyor/belt/telemetry", msg, 0), Quarantine)
    dup = src.handle("stf/conveyor/belt/telemetry", msg, 0)
    assert isinstance(dup, Quarantine) and dup.reason == "duplicate message"


def test_template_needs_devices() -> None:
    """A topic template without a devices list is a config error naming the key."""
    with pytest.raises(ConfigError, match="devices must list"):
        loads(CONFIG.replace('devices = ["conveyor/belt"]', ""))


def test_deeply_nested_payload_is_quarantined_not_raised(tmp_path: Path) -> None:
    """A 200,000-deep JSON array is quarantined with a reason; the next message is kept."""
    src = source(tmp_path)
    bomb = b"[" * 200_000 + b"]" * 200_000
    got = src.handle("stf/conveyor/belt/telemetry", bomb, 0)
    assert isinstance(got, Quarantine) and "nested deeper than" in got.reason
    ok = src.handle("stf/conveyor/belt/telemetry", b'{"ts": 1795255200, "current_a": 1.5}', 0)
    assert not isinstance(ok, Quarantine)


def test_oversized_payload_is_quarantined(tmp_path: Path) -> None:
    """A payload above max_payload_bytes is quarantined without being decoded."""
    cfg = loads(CONFIG.replace('name = "motors"', 'name = "motors"\nmax_payload_bytes = 64'))
    src_cfg = cfg.sources[0]
    assert isinstance(src_cfg, MqttSourceConfig)
    tags = TagRegistry()
    src_cfg.declare_tags(tags)
    src = src_cfg.build(BuildContext("gw", tags, Metrics(), tmp_path, lambda n: ""))
    big = b'{"ts": 1795255200, "current_a": 1.5, "pad": "' + b"x" * 100 + b'"}'
    got = src.handle("stf/conveyor/belt/telemetry", big, 0)
    assert isinstance(got, Quarantine) and "larger than 64 bytes" in got.reason


def test_unexpected_error_in_handling_becomes_quarantine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception from one payload is a Quarantine naming its class, never raised."""
    src = source(tmp_path)

    def boom(*_a: object, **_k: object) -> object:
        raise ZeroDivisionError("surprise")

    monkeypatch.setattr("edge.sources.mqtt.extract", boom)
    got = src.handle("stf/conveyor/belt/telemetry", b'{"ts": 1, "current_a": 1}', 0)
    assert isinstance(got, Quarantine) and got.reason.startswith("ZeroDivisionError")


def test_nesting_limit_counts_brackets_outside_strings_only() -> None:
    """Brackets inside JSON strings do not count towards the nesting depth."""
    deep_text = json.dumps({"current_a": 1.0, "state": "idle", "note": "[" * 500}).encode()
    got = extract(deep_text, FIELDS, ts_path=None, tz=None, ts_unit="auto", batched=False,
                  arrival_ns=1)
    assert got.value.tolist() == [1.0, 0.0]
    nested = b'{"current_a": 1, "state": "idle", "x": ' + b"[" * 40 + b"]" * 40 + b"}"
    with pytest.raises(PayloadError, match="nested deeper than 32"):
        extract(nested, FIELDS, ts_path=None, tz=None, ts_unit="auto", batched=False,
                arrival_ns=1)


def _no_ts_source(tmp: Path, extra: str = "") -> MqttSource:
    cfg = loads(CONFIG.replace('ts_field = "ts"\n', extra)).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), tmp, lambda n: ""))


def test_identical_readings_without_identity_are_all_kept(tmp_path: Path) -> None:
    """Ten equal readings of a stopped motor (no ts or id field) give ten samples."""
    src = _no_ts_source(tmp_path)
    got = [src.handle("stf/conveyor/belt/telemetry", b'{"current_a": 0.0}', i * 500_000_000)
           for i in range(10)]
    assert not any(isinstance(g, Quarantine) for g in got)


def test_broker_redelivery_of_a_kept_message_is_a_duplicate(tmp_path: Path) -> None:
    """A message flagged as redelivered (dup, QoS>0) equal to one kept is quarantined."""
    src = _no_ts_source(tmp_path)
    msg = b'{"current_a": 0.0}'
    assert not isinstance(src.handle("stf/conveyor/belt/telemetry", msg, 0), Quarantine)
    dup = src.handle("stf/conveyor/belt/telemetry", msg, 1, redelivered=True)
    assert isinstance(dup, Quarantine) and dup.reason == "duplicate message"
    other = src.handle("stf/conveyor/belt/telemetry", b'{"current_a": 1.0}', 2,
                       redelivered=True)
    assert not isinstance(other, Quarantine)


def test_id_field_identifies_duplicates(tmp_path: Path) -> None:
    """With id_field, a second message with the same id is a duplicate, a new id is not."""
    src = _no_ts_source(tmp_path, 'id_field = "seq"\n')
    topic = "stf/conveyor/belt/telemetry"
    assert not isinstance(src.handle(topic, b'{"seq": 1, "current_a": 0.0}', 0), Quarantine)
    assert not isinstance(src.handle(topic, b'{"seq": 2, "current_a": 0.0}', 0), Quarantine)
    dup = src.handle(topic, b'{"seq": 2, "current_a": 0.0}', 0)
    assert isinstance(dup, Quarantine) and dup.reason == "duplicate message"


CMM_CONFIG = """
[[sources]]
type = "mqtt"
name = "quality"
[[sources.subscriptions]]
topic = "cmm/+/result"
kind = "cmm"
device = "cmm2"
ts_field = "ts"
[sources.subscriptions.cmm]
part_id = "part"
feature = "feature"
measured_mm = "length_mm"
part_temp_c = "t_part_c"
features.bore_50 = { nominal_mm = 50.0, tol_mm = 0.02 }
"""


def _cmm_source(tmp: Path) -> MqttSource:
    cfg = loads(CMM_CONFIG).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), tmp, lambda n: ""))


def test_cmm_message_becomes_the_typed_cmm_reading(tmp_path: Path) -> None:
    """A CMM result as JSON (string part id) is a CmmReading like the file source's."""
    src = _cmm_source(tmp_path)
    got = src.handle("cmm/a/result", b'{"part": "P-0001234", "feature": "bore_50", '
                     b'"length_mm": 50.0123, "t_part_c": 23.4, "ts": 1795255200}', 0)
    assert got == CmmReading(1_795_255_200_000_000_000, "cmm2", "P-0001234", "", "bore_50",
                             50.0, 0.02, 50.0123, 23.4, got.air_temp_c,  # type: ignore[union-attr]
                             20.0, where="cmm/a/result")
    assert src.cfg.measurement_devices() == frozenset({"cmm2"})


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"part": "P1", "feature": "slot_9", "length_mm": 1, "ts": 1795255200}',
     "unknown feature 'slot_9' (no nominal configured)"),
    (b'{"part": "", "feature": "bore_50", "length_mm": 1, "ts": 1795255200}',
     "missing field 'part'"),
    (b'{"part": "P1", "feature": "bore_50", "length_mm": "x", "ts": 1795255200}',
     "not a number in 'length_mm': 'x'"),
    (b'{"part": {"a": 1}, "feature": "bore_50", "length_mm": 1, "ts": 1795255200}',
     "not a text in 'part': {'a': 1}"),
])
def test_bad_cmm_message_is_quarantined_with_reason(tmp_path: Path, body: bytes,
                                                    reason: str) -> None:
    """A CMM message that cannot be a reading is quarantined with what is wrong."""
    got = _cmm_source(tmp_path).handle("cmm/a/result", body, 0)
    assert isinstance(got, Quarantine) and got.reason == reason


@pytest.mark.parametrize(("change", "message"), [
    (("features.bore_50 = { nominal_mm = 50.0, tol_mm = 0.02 }\n", ""),
     "give nominal_mm and tol_mm paths, or list features"),
    (('kind = "cmm"\n', 'kind = "cmm"\nfields = [{ path = "x", tag = "x" }]\n'),
     "fields is for kind = 'samples'"),
    (('kind = "cmm"\n', 'kind = "cmn"\n'), "kind"),
    (("[sources.subscriptions.cmm]\n", "[sources.subscriptions.cmmm]\n"), "cmmm"),
])
def test_cmm_subscription_mistakes_are_config_errors(change: tuple[str, str],
                                                     message: str) -> None:
    """Mistakes in a kind = 'cmm' subscription fail at load time naming the key."""
    with pytest.raises(ConfigError, match=message):
        loads(CMM_CONFIG.replace(*change))


def test_samples_source_declares_no_measurement_devices(tmp_path: Path) -> None:
    """A source with only sample subscriptions produces no CMM readings."""
    assert source(tmp_path).cfg.measurement_devices() == frozenset()
