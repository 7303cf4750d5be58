"""OPC-UA client source without a server: its config, the DataValue -> sample mapping,
the keepalive rule and the monitored-item requests."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from edge.config import ConfigError, convert
from edge.model import Quality, SampleBatch, TagRegistry
from edge.protocols.opcua.client import (
    Columns,
    all_bad,
    deadband_filter,
    keepalive_count,
    monitored_item_request,
    silent_for,
    status_name,
    ts_ns_of,
    value_of,
)
from edge.runtime.links import LinkState
from edge.runtime.metrics import Metrics
from edge.sources.opcua_backfill import Backfill, Filled
from edge.sources.opcua_config import OpcUaSourceConfig
from edge.sources.opcua_outage import Outages
from edge.sources.opcua_types import TextTag, TypeWatch, describe


def raw_config(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "plc", "endpoint": "opc.tcp://127.0.0.1:4840",
        "groups": [{"name": "fast", "tags": [
            {"name": "temp", "node_id": "ns=1;s=PLC.Temp", "unit": "degC"},
            {"name": "run", "node_id": "ns=1;i=42", "type": "bool"},
        ]}],
    }
    raw.update(over)
    return raw


def load(raw: dict[str, Any]) -> OpcUaSourceConfig:
    return convert(raw, OpcUaSourceConfig, "source 'plc'")


def test_config_declares_tags_under_the_device_and_no_actions() -> None:
    """A valid config declares <device>/<tag> with unit and type, takes no commands and
    gives no CMM readings."""
    cfg = load(raw_config(device="press1"))
    tags = TagRegistry()
    cfg.declare_tags(tags)
    spec = tags.get("press1/temp")
    assert spec is not None and spec.unit == "degC" and spec.dtype == "float64"
    run = tags.get("press1/run")
    assert run is not None and run.dtype == "bool"
    assert cfg.actions() == frozenset() and cfg.measurement_devices() == frozenset()
    stop = load(raw_config(commands=[{"action": "stop", "node_id": "ns=1;s=Stop"}]))
    assert stop.actions() == frozenset({"stop"})


@pytest.mark.parametrize(("over", "message"), [
    ({"endpoint": "http://x"}, "endpoint must start with opc.tcp://"),
    ({"security_policy": "Basic256Sha256"}, "security_policy and security_mode"),
    ({"password_secret": "PW"}, "password_secret needs user"),
    ({"keepalive_s": 0}, "keepalive_s must be > 0"),
    ({"groups": []}, "groups must list at least one group"),
    ({"groups": [{"name": "g", "tags": [{"name": "t", "node_id": "ns=1;x=bad"}]}]},
     "node_id 'ns=1;x=bad' is not a node id"),
    ({"groups": [{"name": "g", "publishing_interval_ms": 1,
                  "tags": [{"name": "t", "node_id": "i=1"}]}]},
     "publishing_interval_ms must be >= 10 ms"),
    ({"groups": [{"name": "g", "tags": [{"name": "t", "node_id": "i=1",
                                         "deadband": "percent", "deadband_value": 150}]}]},
     "deadband_value must be 0..100"),
    ({"groups": [{"name": "g", "mode": "poll", "tags": [
        {"name": "t", "node_id": "i=1", "deadband": "absolute", "deadband_value": 1}]}]},
     "apply to mode = 'subscribe' only"),
    ({"commands": [{"action": "stop", "node_id": "i=1"}, {"action": "stop", "node_id": "i=2"}]},
     "commands: an action is defined twice"),
    ({"commands": [{"action": "stop", "node_id": "i=1", "type": "int16", "value": 1.5}]},
     "value must be a whole number for type 'int16'"),
    ({"groups": [{"name": "a", "tags": [{"name": "t", "node_id": "i=1"}]},
                 {"name": "b", "tags": [{"name": "t", "node_id": "i=2"}]}]},
     "tag 't' is used twice"),
])
def test_config_mistakes_name_the_source_and_key(over: dict[str, Any], message: str) -> None:
    """Each config mistake is a ConfigError naming the source and what is wrong."""
    with pytest.raises(ConfigError) as err:
        load(raw_config(**over))
    assert "source 'plc'" in str(err.value) and message in str(err.value)


def dv(value: object, vt: ua.VariantType, status: int = 0, source: datetime | None = None,
       server: datetime | None = None) -> ua.DataValue:
    return ua.DataValue(Value=ua.Variant(value, vt), StatusCode=ua.StatusCode(status),
                        SourceTimestamp=source, ServerTimestamp=server)


T1 = datetime(2026, 12, 7, 12, 0, 0, 250000, tzinfo=UTC)
T2 = datetime(2026, 12, 7, 12, 0, 1, tzinfo=UTC)


def test_values_map_to_float_with_the_status_quality() -> None:
    """Numbers and booleans become float64 with the status mapped to our quality; a Bad
    status gives NaN, Uncertain keeps the value; a string is never Good (BAD_DECODE)."""
    assert value_of(dv(21.5, ua.VariantType.Double)) == (21.5, int(Quality.GOOD))
    assert value_of(dv(True, ua.VariantType.Boolean)) == (1.0, int(Quality.GOOD))
    assert value_of(dv(-7, ua.VariantType.Int32)) == (-7.0, int(Quality.GOOD))
    v, q = value_of(dv(3.0, ua.VariantType.Double, ua.StatusCodes.BadSensorFailure))
    assert math.isnan(v) and q == Quality.BAD_DEVICE_EXCEPTION
    assert value_of(dv(3.0, ua.VariantType.Double, ua.StatusCodes.UncertainLastUsableValue)) \
        == (3.0, int(Quality.UNCERTAIN_STALE))
    v, q = value_of(dv("on", ua.VariantType.String))
    assert math.isnan(v) and q == Quality.BAD_DECODE
    v, q = value_of(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)))
    assert math.isnan(v) and q == Quality.BAD


def test_timestamp_is_the_source_time_else_the_server_time_else_arrival() -> None:
    """The sample's time is the PLC's source timestamp; without it the server's; without
    either the time it arrived."""
    assert ts_ns_of(dv(1.0, ua.VariantType.Double, source=T1, server=T2), 5) \
        == 1796644800_250000000
    assert ts_ns_of(dv(1.0, ua.VariantType.Double, server=T2), 5) == 1796644801_000000000
    assert ts_ns_of(dv(1.0, ua.VariantType.Double), 5) == 5


def test_columns_make_one_batch_of_a_publish() -> None:
    """The values of one publish become one SampleBatch, in arrival order."""
    cols = Columns()
    cols.add(3, dv(1.5, ua.VariantType.Double, source=T1), 0)
    cols.add(4, dv(False, ua.VariantType.Boolean, source=T2), 0)
    batch = cols.batch()
    assert batch.tag_id.tolist() == [3, 4] and batch.value.tolist() == [1.5, 0.0]
    assert batch.quality.tolist() == [0, 0] and batch.ts_ns[0] < batch.ts_ns[1]


def test_all_bad_marks_every_tag_not_connected() -> None:
    """While data is missing every tag gets one NaN sample with BAD_NOT_CONNECTED."""
    import numpy as np

    batch = all_bad(np.array([1, 2, 3], np.int32), Quality.BAD_NOT_CONNECTED, 42)
    assert batch.tag_id.tolist() == [1, 2, 3] and batch.ts_ns.tolist() == [42] * 3
    assert np.isnan(batch.value).all() and (batch.quality == Quality.BAD_NOT_CONNECTED).all()


@given(st.integers(min_value=0, max_value=2**32 - 1), st.floats(allow_nan=False))
def test_a_bad_status_never_passes_a_value(code: int, value: float) -> None:
    """Whatever status a server sends, the severity is kept and a Bad one carries NaN."""
    v, q = value_of(dv(value, ua.VariantType.Double, code))
    severity = code & 0xC0000000
    if severity & 0x80000000:
        assert q & 0x80 and math.isnan(v)
    else:
        assert v == value and (q & 0x40 if severity else q == 0)


def test_keepalive_rule_is_two_periods() -> None:
    """A subscription is lost once its last answer is older than two keepalive periods."""
    assert silent_for(10.0, 11.9, 1.0) is None
    assert silent_for(10.0, 12.0, 1.0) is None
    assert silent_for(10.0, 12.1, 1.0) == pytest.approx(2.1)
    assert keepalive_count(2.0, 500) == 4 and keepalive_count(0.1, 500) == 1


def test_monitored_item_request_carries_sampling_queue_and_deadband() -> None:
    """A tag's sampling interval, queue size and deadband go into its request."""
    req = monitored_item_request(7, ua.NodeId.from_string("ns=1;s=X"), 50.0, 10,
                                 deadband_filter("percent", 2.5))
    p = req.RequestedParameters
    assert (p.ClientHandle, p.SamplingInterval, p.QueueSize) == (7, 50.0, 10)
    assert p.Filter.DeadbandType == ua.DeadbandType.Percent and p.Filter.DeadbandValue == 2.5
    assert deadband_filter("none", 0.0) is None
    assert deadband_filter("absolute", 1.0).DeadbandType == ua.DeadbandType.Absolute  # type: ignore[union-attr]
    assert status_name(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)) == "BadNodeIdUnknown"


def test_text_tags_are_not_samples_and_refuse_sample_options() -> None:
    """A text tag declares no sample tag; a deadband for it is a config error naming the
    tag; a polling group takes it (its values are read like a subscription's)."""
    raw = raw_config()
    raw["groups"][0]["tags"].append({"name": "recipe", "node_id": "ns=1;s=R", "type": "text"})
    cfg = convert(raw, OpcUaSourceConfig, "source 'plc'")
    tags = TagRegistry()
    cfg.declare_tags(tags)
    assert "plc/recipe" not in tags and "plc/temp" in tags
    raw["groups"][0]["tags"][-1]["deadband"] = "absolute"
    with pytest.raises(ConfigError, match="text tag takes no deadband"):
        convert(raw, OpcUaSourceConfig, "source 'plc'")
    raw = raw_config()
    raw["groups"][0]["mode"] = "poll"
    raw["groups"][0]["tags"].append({"name": "recipe", "node_id": "ns=1;s=R", "type": "text"})
    polled = convert(raw, OpcUaSourceConfig, "source 'plc'")
    assert polled.groups[0].tags[-1].type == "text"


def _dv(value: object, vt: ua.VariantType, ts: int = 1) -> ua.DataValue:
    stamp = datetime.fromtimestamp(ts, UTC)
    return ua.DataValue(Value=ua.Variant(value, vt), SourceTimestamp=stamp)


def test_text_values_are_emitted_on_change_and_bad_once_when_data_is_missing() -> None:
    """A text tag gives a TextValue only when its text changes; an enumeration number
    becomes its name; a loss gives one Bad TextValue with the reason, after which the
    same text is a change again; a number on a text tag is a quarantine, once."""
    watch = TypeWatch("plc", {}, {})
    tt = TextTag("plc/mode", "ns=1;s=M", {0: "Idle", 1: "Running"})
    first = watch.texts([(tt, _dv(0, ua.VariantType.Int32)), (tt, _dv(0, ua.VariantType.Int32))])
    assert [(r.value, r.quality) for r in first] == [("Idle", 0)]  # type: ignore[union-attr]
    lost = watch.lost("connection lost: OSError", 5)
    assert [(r.value, r.quality, r.reason) for r in lost] == [  # type: ignore[union-attr]
        ("Idle", int(Quality.BAD_NOT_CONNECTED), "connection lost: OSError")]
    assert watch.lost("again", 6) == []
    again = watch.texts([(tt, _dv(0, ua.VariantType.Int32, 7))])
    assert [(r.value, r.quality) for r in again] == [("Idle", 0)]  # type: ignore[union-attr]
    odd = watch.texts([(tt, _dv([1.0, 2.0], ua.VariantType.Double, 8))] * 2)
    assert [type(r).__name__ for r in odd] == ["Quarantine", "TextValue"]
    assert describe(ua.Variant([1.0, 2.0], ua.VariantType.Double)) == "Double[2]"


def test_backfill_drops_live_values_it_already_delivered_until_a_newer_one() -> None:
    """After a backfill, a live value not newer than the tag's newest backfilled value is
    dropped; from the first newer one on, the tag's values pass as they come."""
    bf = Backfill("plc", np.array([3, 5], np.int32), [ua.NodeId(1), ua.NodeId(2)], Metrics(),
                  max_s=60, max_values=10, timeout_s=1)
    bf.watermark[0] = 100
    bf.dedup = True
    out = bf.live(SampleBatch([3, 3, 5, 3], [90, 100, 50, 110], [1.0, 2.0, 3.0, 4.0]))
    assert out.ts_ns.tolist() == [50, 110] and not bf.dedup
    assert bf.live(SampleBatch([3], [60], [5.0])).ts_ns.tolist() == [60]  # clock stepped back
    assert bf.seen.tolist() == [110, 50]


def test_outages_reach_the_links_status_with_reason_length_and_backfill() -> None:
    """The link's SourceStatus follows the data: Bad with the first reason of an outage
    (a failed reconnect keeps it), the outage's length once data flows, the backfill's
    outcome; the first session is no outage and reports no backfill."""
    state = LinkState("source:plc")
    out = Outages(state, backfill=True)
    assert state.source is not None and not state.source.link_up
    assert state.source.backfill == "none" and math.isnan(state.source.last_outage_s)
    out.filled(Filled(0, 0, 0))  # first session: no tag had a gap
    assert out.flowing(100.0) is None and state.source.link_up
    assert state.source.outages == 0 and state.source.backfill == "none"
    assert out.lost("connection lost: OSError", 200.0)
    assert not out.lost("cannot open a session: refused", 201.0)  # the same outage
    st = state.source
    assert (st.link_up, st.bad_reason, st.bad_since, st.outages) == (
        False, "connection lost: OSError", 200.0, 1)
    out.filled(Filled(values=57, tags=3, unfilled=1))
    assert out.flowing(203.5) == 3.5 and out.flowing(204.0) is None
    st = state.source
    assert (st.link_up, st.bad_reason, st.bad_since, st.last_outage_s) == (True, "", 0.0, 3.5)
    assert (st.backfill, st.backfilled_values, st.unfilled_tags) == ("partial", 57, 1)
    out.lost("x", 300.0)
    out.filled(Filled(values=0, tags=3, unfilled=3))
    assert state.source.backfill == "no_history"
    off = LinkState("source:other")
    Outages(off, backfill=False).filled(Filled(5, 1, 0))
    assert off.source is not None and off.source.backfill == "off"


def test_an_array_type_is_refused_with_the_valid_types_listed() -> None:
    """A tag typed as an array ("float64[4]") is a config error that lists every type a
    tag takes (text included), so the engineer sees arrays are not one of them."""
    raw = raw_config()
    raw["groups"][0]["tags"][0]["type"] = "float64[4]"
    with pytest.raises(ConfigError) as err:
        load(raw)
    message = str(err.value)
    assert "tag 'temp': type: invalid enum value 'float64[4]'" in message
    assert "'float64'" in message and "'text'" in message and "'bool'" in message
