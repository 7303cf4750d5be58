"""Line-protocol encoding of samples and records: schema, quality, escaping, round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point

from edge.model import (
    HealthAlert,
    InterlockTrip,
    Measurement,
    Quality,
    Quarantine,
    Sample,
    SampleBatch,
    SpcViolation,
    TagRegistry,
)
from edge.sinks.lineproto import (
    RecordEncoder,
    SampleEncoder,
    UnknownTagError,
    escape_key,
    escape_measurement,
    escape_string,
    sanitise,
)

Fields = dict[str, float | int | bool | str]

# ----------------------------------------------------------------------------- parser
# An independent reader with InfluxDB 1.x semantics: in identifiers a backslash escapes
# the next character; in string fields only \\ and \" are escapes, other backslashes
# are kept as they are.


def _ident(s: str, i: int, stops: str) -> tuple[str, int]:
    out: list[str] = []
    while i < len(s) and s[i] not in stops:
        if s[i] == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out), i


def _value(s: str, i: int) -> tuple[float | int | bool | str, int]:
    if s[i] == '"':
        out: list[str] = []
        i += 1
        while s[i] != '"':
            if s[i] == "\\" and s[i + 1] in '\\"':
                out.append(s[i + 1])
                i += 2
            else:
                out.append(s[i])
                i += 1
        return "".join(out), i + 1
    j = i
    while j < len(s) and s[j] not in ", ":
        j += 1
    raw = s[i:j]
    if raw in ("true", "false"):
        return raw == "true", j
    if raw.endswith("i"):
        return int(raw[:-1]), j
    return float(raw), j


def parse_line(line: str) -> tuple[str, dict[str, str], Fields, int]:
    measurement, i = _ident(line, 0, ", ")
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = _ident(line, i + 1, "=")
        value, i = _ident(line, i + 1, ", ")
        tags[key] = value
    assert line[i] == " "
    fields: Fields = {}
    i += 1
    while True:
        key, i = _ident(line, i, "=")
        value, i = _value(line, i + 1)
        fields[key] = value
        if line[i] == " ":
            break
        assert line[i] == ","
        i += 1
    return measurement, tags, fields, int(line[i + 1:])


def parse(text: str) -> list[tuple[str, dict[str, str], Fields, int]]:
    assert text.endswith("\n") or not text
    return [parse_line(line) for line in text.splitlines()]


# ----------------------------------------------------------------------------- samples


def _registry() -> TagRegistry:
    reg = TagRegistry()
    reg.add("etch1", "chamber_temp", unit="degC")
    reg.add("etch1", "pressure")
    reg.add("stf 1", "motor,current")
    return reg


def test_samples_schema() -> None:
    """A sample is one line: device as measurement, gateway + static tags, tag name as
    float field, timestamp in ns."""
    enc = SampleEncoder(_registry(), {"gateway": "gw1", "site": "fab1", "line": "A"})
    text = enc.encode(SampleBatch([0, 1], [10, 20], [187.25, 3.0]))
    assert text == (
        "etch1,gateway=gw1,line=A,site=fab1 chamber_temp=187.25 10\n"
        "etch1,gateway=gw1,line=A,site=fab1 pressure=3.0 20\n"
    )


def test_samples_quality() -> None:
    """Non-good samples carry <name>_quality; a non-finite value is left out, never lost."""
    enc = SampleEncoder(_registry(), {"gateway": "gw1"})
    batch = SampleBatch(
        [0, 0, 1, 1, 0],
        [1, 2, 3, 4, 5],
        [1.5, math.nan, 2.5, math.inf, 7.0],
        [Quality.GOOD, Quality.BAD_TIMEOUT, Quality.UNCERTAIN_STALE, Quality.GOOD,
         Quality.GOOD_COMPENSATED],
    )
    lines = parse(enc.encode(batch))
    assert [f for _, _, f, _ in lines] == [
        {"chamber_temp": 1.5},
        {"chamber_temp_quality": int(Quality.BAD_TIMEOUT)},
        {"pressure": 2.5, "pressure_quality": int(Quality.UNCERTAIN_STALE)},
        {"pressure_quality": 0},
        {"chamber_temp": 7.0, "chamber_temp_quality": 1},
    ]
    assert [t for *_, t in lines] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("precision", "ts"), [("ns", 1_700_000_000_123_456_789),
                                               ("us", 1_700_000_000_123_456),
                                               ("ms", 1_700_000_000_123),
                                               ("s", 1_700_000_000)])
def test_samples_precision(precision: str, ts: int) -> None:
    """Timestamps are truncated to the configured precision."""
    enc = SampleEncoder(_registry(), {"gateway": "g"}, precision)
    (line,) = parse(enc.encode(SampleBatch([1], [1_700_000_000_123_456_789], [1.0])))
    assert line[3] == ts


def test_samples_unknown_tag() -> None:
    """A tag id outside the registry raises UnknownTagError naming it."""
    enc = SampleEncoder(_registry(), {"gateway": "g"})
    with pytest.raises(UnknownTagError, match="tag id 7"):
        enc.encode(SampleBatch([0, 7], [1, 2], [1.0, 2.0]))


def test_samples_registry_growth() -> None:
    """Tags added to the registry after the encoder was made are encoded too."""
    reg = _registry()
    enc = SampleEncoder(reg, {"gateway": "g"})
    spec = reg.add("gateway", "journal_depth_points")
    (line,) = parse(enc.encode(SampleBatch([spec.id], [5], [12.0])))
    assert line[0] == "gateway" and line[2] == {"journal_depth_points": 12.0}


def test_samples_empty() -> None:
    """An empty batch encodes to nothing."""
    assert SampleEncoder(_registry(), {"gateway": "g"}).encode(SampleBatch.empty()) == ""


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50),
    data=st.data(),
)
def test_samples_round_trip(values: list[float], data: st.DataObject) -> None:
    """Parsed back, every finite value and timestamp is exact, and every non-good or
    non-finite sample carries its quality code."""
    reg = _registry()
    n = len(values)
    tids = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    ts = data.draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n))
    qs = data.draw(st.lists(st.sampled_from([int(q) for q in Quality]), min_size=n,
                            max_size=n))
    batch = SampleBatch(tids, ts, values, qs)
    lines = parse(SampleEncoder(reg, {"gateway": "g w"}).encode(batch))
    assert len(lines) == n
    for (meas, tags, fields, t), tid, v, q, tsi in zip(lines, tids, values, qs, ts,
                                                        strict=True):
        spec = reg[tid]
        assert (meas, tags, t) == (spec.device, {"gateway": "g w"}, tsi)
        if math.isfinite(v):
            assert fields[spec.name] == v
        else:
            assert spec.name not in fields
        if q != 0 or not math.isfinite(v):
            assert fields[spec.name + "_quality"] == q


# ----------------------------------------------------------------------------- escaping

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                max_size=20)


@settings(max_examples=200, deadline=None)
@given(measurement=_text, key=_text, value=_text, field=_text, sval=st.text(max_size=30))
def test_escaping_round_trip(measurement: str, key: str, value: str, field: str,
                             sval: str) -> None:
    """Any identifier reads back as its sanitised self and any string field exactly
    (newlines read back as the two characters \\n)."""
    line = (f"{escape_measurement(measurement)},{escape_key(key)}={escape_key(value)} "
            f"{escape_key(field)}={escape_string(sval)},x=1i 5")
    meas, tags, fields, ts = parse_line(line)

    def ident(s: str) -> str:
        return "time_" if sanitise(s) == "time" else sanitise(s)

    assert meas == sanitise(measurement)
    assert tags == {ident(key): ident(value)}
    expected = sval.replace("\n", "\\n").replace("\r", "\\r")
    if ident(field) != "x":
        assert fields[ident(field)] == expected
    assert ts == 5


def test_escaping_matches_influxdb_client() -> None:
    """Where both are defined, our escaping reads back like influxdb-client's Point."""
    names = ["plain", "with space", "a,b", "k=v", 'quo"te', "ünï", "x=1,y 2"]
    for name in names:
        theirs = (Point(name).tag(name, name).field(name, 1.5).field("s", name)
                  .time(42).to_line_protocol())
        ours = (f"{escape_measurement(name)},{escape_key(name)}={escape_key(name)} "
                f"{escape_key(name)}=1.5,s={escape_string(name)} 42")
        assert parse_line(ours) == parse_line(theirs), name


# ----------------------------------------------------------------------------- records


def test_record_lines() -> None:
    """Records become lines of their type with low-cardinality tags, typed fields, the
    stable id, non-finite floats left out, nested values as JSON strings."""
    enc = RecordEncoder({"gateway": "gw1", "site": "fab1"})
    m = Measurement(
        ts_ns=100, device="cmm1", part_id="P-7", lot="L 3", feature="bore_d", nominal_mm=20.0,
        tol_mm=0.01, raw_mm=20.004, part_temp_c=math.nan, air_temp_c=21.5,
        scale_temp_c=21.0, l20_mm=20.003, u_mm=0.001, verdict="conforming",
        part_temp_estimated=True, source="a.csv",
    )
    trip = InterlockTrip(
        ts_ns=200, interlock="overtemp", tag="etch1/chamber_temp", condition="> 188",
        value=190.5, limit=188.0, action="stop", action_ok=True, reaction_ns=1_234,
        context={"lot": "L3"},
    )
    q = Quarantine(ts_ns=300, source="cmm1", reason='bad "row"\nline 2', payload="a\\b",
                   evidence=[Sample("etch1/chamber_temp", 1, 190.0, 0)])
    h = HealthAlert(ts_ns=400, motor="stf/m1", health=0.42, ttf_s=3600.0, reason="low")
    s = SpcViolation(ts_ns=500, tag="etch1/pressure", rule="western_electric_1", value=3,
                     center=1.0, sigma=0.5)
    lines = parse(enc.encode([m, trip, q, h, s], ["i0", "i1", "i2", "i3", "i4"]))
    (m_meas, m_tags, m_f, m_ts) = lines[0]
    assert (m_meas, m_ts) == ("measurement", 100)
    assert m_tags == {"gateway": "gw1", "site": "fab1", "device": "cmm1", "feature": "bore_d",
                      "verdict": "conforming"}
    assert "part_temp_c" not in m_f
    assert m_f["part_id"] == "P-7" and m_f["lot"] == "L 3" and m_f["raw_mm"] == 20.004
    assert m_f["part_temp_estimated"] is True and m_f["id"] == "i0"
    t_meas, t_tags, t_f, _ = lines[1]
    assert t_meas == "interlock_trip"
    assert t_tags["interlock"] == "overtemp" and t_tags["tag"] == "etch1/chamber_temp"
    assert t_f["reaction_ns"] == 1234 and t_f["context"] == '{"lot":"L3"}'
    assert t_f["action_ok"] is True
    _, q_tags, q_f, _ = lines[2]
    assert q_tags["source"] == "cmm1"
    assert q_f["reason"] == 'bad "row"\\nline 2' and q_f["payload"] == "a\\b"
    assert q_f["evidence"] == '[["etch1/chamber_temp",1,190.0,0]]'
    assert lines[3][1]["motor"] == "stf/m1" and lines[3][2]["health"] == 0.42
    # an int in a float field stays a float: a field never changes type
    assert lines[4][2]["value"] == 3.0 and isinstance(lines[4][2]["value"], float)


def test_record_precision() -> None:
    """Record timestamps follow the precision too."""
    enc = RecordEncoder({"gateway": "g"}, "ms")
    h = HealthAlert(ts_ns=1_700_000_000_123_456_789, motor="m", health=0.1, ttf_s=1.0,
                    reason="r")
    assert parse(enc.encode([h], ["x"]))[0][3] == 1_700_000_000_123
