"""The tag address space as a SCADA engineer reads it: units from the UNECE table, a range
only where one is configured, no empty EngineeringUnits. No sockets."""

from __future__ import annotations

from asyncua import ua

from edge.model import TagRegistry
from edge.protocols.opcua.units import eu_information
from edge.sinks.opcua_space import tag_items


def _code(code: str) -> int:
    value = 0
    for ch in code:
        value = (value << 8) | ord(ch)
    return value


def test_units_use_the_unece_codes_of_the_opc_foundation_table() -> None:
    """sccm is G49 (cm3/min), newton NEW (not the NEU it was), an integer count C62;
    millitorr, which Rec 20 lacks, keeps its text with UnitId -1 and says so."""
    assert eu_information("sccm").UnitId == _code("G49")
    assert eu_information("sccm").DisplayName.Text == "sccm"
    assert eu_information("N").UnitId == _code("NEW")
    assert eu_information("count").UnitId == _code("C62")
    mtorr = eu_information("mTorr")
    assert (mtorr.UnitId, mtorr.DisplayName.Text) == (-1, "mTorr")
    assert "no UNECE" in mtorr.Description.Text


def test_range_only_where_configured_and_no_empty_units() -> None:
    """A tag with both limits is an AnalogItemType with them as EURange; one without is a
    BaseAnalogType without EURange (never +-3.4e38); a tag without a unit (an integer lot
    number) has no EngineeringUnits; booleans have neither."""
    reg = TagRegistry()
    reg.add("etch1", "chamber_temp", unit="degC", dtype="float32", low=0, high=400)
    reg.add("etch1", "pressure", unit="mTorr", dtype="float32")
    reg.add("etch1", "lot", dtype="uint16")
    reg.add("etch1", "stop", dtype="bool")
    items = tag_items(reg, 2, ua.NodeId("_devices", 2))
    ids = {i.RequestedNewNodeId.Identifier: i for i in items}
    assert ids["etch1/chamber_temp"].TypeDefinition == ua.NodeId(ua.ObjectIds.AnalogItemType)
    rng = ids["etch1/chamber_temp.EURange"].NodeAttributes.Value.Value
    assert (rng.Low, rng.High) == (0.0, 400.0)
    assert ids["etch1/pressure"].TypeDefinition == ua.NodeId(ua.ObjectIds.BaseAnalogType)
    assert "etch1/pressure.EURange" not in ids and "etch1/pressure.EngineeringUnits" in ids
    assert "etch1/lot.EngineeringUnits" not in ids and "etch1/lot.EURange" not in ids
    assert not [k for k in ids if k.startswith("etch1/stop.")]
    for item in items:
        value = getattr(item.NodeAttributes, "Value", None)
        if isinstance(value, ua.Variant) and isinstance(value.Value, ua.Range):
            assert abs(value.Value.Low) < 1e30 and abs(value.Value.High) < 1e30
