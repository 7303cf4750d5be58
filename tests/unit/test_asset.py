"""The asset path ([asset]): config errors, and what each northbound sink takes from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from asyncua import ua

from edge.app import Gateway
from edge.asset import AssetConfig, AssetLevels, record_device
from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import InterlockTrip, Quarantine, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sinks.lineproto import RecordEncoder, SampleEncoder
from edge.sinks.opcua_space import asset_folders, tag_items
from edge.sinks.sparkplug import SparkplugSinkConfig

PLANT = """
[asset]
enterprise = "acme"
site = "dresden"
area = "etch"
line = "line1"
cell = "cell3"

[asset.devices.cmm1]
area = "metrology"
line = "qa"
cell = "cmm"
"""

SOURCES = """
[[sources]]
type = "file"
name = "etch1"
paths = ["/tmp/none"]
mode = "samples"
timestamp_column = "time"
values = [{ column = "t", tag = "chamber_temp", unit = "degC" }]

[[sources]]
type = "file"
name = "cmm1"
paths = ["/tmp/none"]
mode = "samples"
timestamp_column = "time"
values = [{ column = "d", tag = "diameter", unit = "mm" }]
"""


def _asset() -> AssetConfig:
    return loads(PLANT).asset


def test_default_and_override_paths() -> None:
    """A device without an override is at the gateway's path; an override replaces only
    the levels it names."""
    asset = _asset()
    assert asset.path("etch1").topic == "acme/dresden/etch/line1/cell3"
    assert asset.path("cmm1").topic == "acme/dresden/metrology/qa/cmm"
    assert asset.path("cmm1").tags() == {"enterprise": "acme", "site": "dresden",
                                         "area": "metrology", "line": "qa", "cell": "cmm"}
    assert not AssetConfig().path("etch1")


@pytest.mark.parametrize(("text", "message"), [
    ('[asset]\nenterprise = "acme"\nsite = "Dresden Nord"\n', "asset: site 'Dresden Nord'"),
    ('[asset]\nenterprise = "acme/eu"\n', "asset: enterprise 'acme/eu' cannot be"),
    ('[asset]\nenterprise = "acme"\nsite = "+"\n', "site '+' cannot be an asset path"),
    ('[asset]\nenterprise = "a#b"\n', "enterprise 'a#b'"),
    ('[asset]\nenterprise = "a:b"\n', "enterprise 'a:b'"),
    ('[asset]\nenterprise = "a,b=c"\n', "enterprise 'a,b=c'"),
    ('[asset]\nenterprise = "x\\ty"\n', "enterprise 'x\\ty'"),
    ('[asset]\nenterprise = "' + "e" * 65 + '"\n', "1-64 letters"),
    ('[asset]\nenterprise = "acme"\nline = "l1"\n', "line is set but site is not"),
    ('[asset]\nenterprise = "acme"\n[asset.devices.x]\ncell = "c"\n',
     "devices.x: cell is set but site is not"),
    ('[asset]\nenterprise = "acme"\n[asset.devices.x]\nline = "a b"\n', "line 'a b'"),
    ('[asset]\nenterprise = "acme"\nsit = "d"\n', "unknown key 'sit'"),
])
def test_bad_asset_config_names_the_key(text: str, message: str) -> None:
    """A segment MQTT, Sparkplug, NATS, OPC-UA or InfluxDB cannot carry, or a gap in the
    path, is a config error naming [asset] and the level."""
    with pytest.raises(ConfigError) as info:
        loads(text)
    assert message in str(info.value)


def test_unicode_letters_dots_and_dashes_are_segments() -> None:
    """Plant names with umlauts, dots and dashes pass unchanged."""
    asset = AssetConfig(enterprise="acme", site="Würzburg", area="hall-2.1")
    assert asset.default.topic == "acme/Würzburg/hall-2.1"


def test_check_config_refuses_an_override_for_an_unknown_device() -> None:
    """An override naming a device no source declares (a typo) fails check-config."""
    cfg = loads(PLANT.replace("devices.cmm1", "devices.cmm_1") + SOURCES)
    with pytest.raises(ConfigError, match=r"asset: devices\.cmm_1: no source declares"):
        Gateway(cfg, secrets=lambda n: n).check()
    assert Gateway(loads(PLANT + SOURCES), secrets=lambda n: n).check() >= 2


def test_sparkplug_ids_come_from_the_asset_path(tmp_path: Path) -> None:
    """Without group_id/edge_node_id, the node is the lowest level and the group the
    levels above it joined by ':'; explicit ids win."""
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp")
    ctx = BuildContext("gw", tags, Metrics(), tmp_path, lambda n: n, asset=_asset())
    sink = SparkplugSinkConfig().build(ctx)
    assert (sink.cfg.group_id, sink.cfg.edge_node_id) == ("acme:dresden:etch:line1", "cell3")
    sink = SparkplugSinkConfig(group_id="g", edge_node_id="n").build(ctx)
    assert (sink.cfg.group_id, sink.cfg.edge_node_id) == ("g", "n")


def test_sparkplug_without_ids_or_asset_fails_check_config() -> None:
    """A Sparkplug sink with neither ids nor a two-level [asset] fails check-config."""
    cfg = loads(SOURCES + '[[sinks]]\ntype = "sparkplug"\n')
    with pytest.raises(ConfigError, match="sink 'sparkplug': group_id and edge_node_id"):
        Gateway(cfg, secrets=lambda n: n).check()
    with pytest.raises(ConfigError, match="given together"):
        loads('[[sinks]]\ntype = "sparkplug"\ngroup_id = "g"\n')


def test_influx_lines_carry_the_device_asset_levels() -> None:
    """Each sample line carries its device's path levels as tags; a record the levels of
    the device it names, or the gateway's own."""
    asset = _asset()
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp")
    tags.add("cmm1", "diameter")

    def device_tags(device: str) -> dict[str, str]:
        return (asset.path(device) if device else asset.default).tags()

    enc = SampleEncoder(tags, {"gateway": "gw"}, "ns", device_tags)
    batch = SampleBatch(np.array([0, 1], np.int32), np.array([5, 6], np.int64),
                        np.array([1.5, 2.5]), np.zeros(2, np.uint8))
    lines = enc.encode(batch).splitlines()
    assert lines[0] == ("etch1,area=etch,cell=cell3,enterprise=acme,gateway=gw,line=line1,"
                        "site=dresden chamber_temp=1.5 5")
    assert lines[1].startswith("cmm1,area=metrology,cell=cmm,enterprise=acme,gateway=gw,"
                               "line=qa,site=dresden diameter=2.5")
    rec = RecordEncoder({"gateway": "gw"}, "ns", device_tags)
    trip = InterlockTrip(7, "hot", "cmm1/diameter", ">", 9.0, 8.0, "stop", True, 1)
    assert rec.line(trip, "gw-1-0").startswith("interlock_trip,action=stop,area=metrology,")
    q = Quarantine(7, "etch1", "bad")
    assert ",line=line1," in rec.line(q, "gw-1-0")
    assert record_device(q) == "" and record_device(trip) == "cmm1"


def test_opcua_devices_sit_in_their_asset_folders() -> None:
    """The browse tree is root/enterprise/.../cell/device/tag, each folder once; node ids
    of devices and tags do not change."""
    asset = _asset()
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp")
    tags.add("etch2", "chamber_temp")
    tags.add("cmm1", "diameter")
    root = ua.NodeId("_devices", 2)
    folders, places = asset_folders({t.device: asset.path(t.device).segments for t in tags},
                                    2, root)
    ids = [f.RequestedNewNodeId.Identifier for f in folders]
    assert ids == ["_asset/acme", "_asset/acme/dresden", "_asset/acme/dresden/etch",
                   "_asset/acme/dresden/etch/line1", "_asset/acme/dresden/etch/line1/cell3",
                   "_asset/acme/dresden/metrology", "_asset/acme/dresden/metrology/qa",
                   "_asset/acme/dresden/metrology/qa/cmm"]
    assert [f.BrowseName.Name for f in folders[:2]] == ["acme", "dresden"]
    items = tag_items(tags, 2, root, places)
    parent = {i.RequestedNewNodeId.Identifier: i.ParentNodeId.Identifier for i in items}
    assert parent["etch1"] == parent["etch2"] == "_asset/acme/dresden/etch/line1/cell3"
    assert parent["cmm1"] == "_asset/acme/dresden/metrology/qa/cmm"
    assert parent["etch1/chamber_temp"] == "etch1"
    assert asset_folders({"etch1": ()}, 2, root) == ([], {})


def test_levels_struct_checks_each_segment() -> None:
    """An override's level is checked on its own, before the merge."""
    with pytest.raises(ValueError, match="cell 'a/b'"):
        AssetLevels(cell="a/b")


def test_record_device_finds_a_device_whose_name_holds_a_slash() -> None:
    """A record about tag 'stf/motor1/current' belongs to device 'stf/motor1' (looked
    up in the registry), not to 'stf'."""
    tags = TagRegistry()
    tags.add("stf/motor1", "current")
    trip = InterlockTrip(7, "hot", "stf/motor1/current", ">", 9.0, 8.0, "stop", True, 1)
    assert record_device(trip, tags) == "stf/motor1"
    assert record_device(trip) == "stf"
