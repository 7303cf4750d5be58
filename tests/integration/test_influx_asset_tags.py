"""InfluxDB 1.x stores the [asset] path levels as tags: a query by site, line or cell finds
each device's samples and records."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.asset import AssetConfig, AssetLevels
from edge.config import loads
from edge.errors import ConfigError
from edge.model import InterlockTrip, SampleBatch, TagRegistry
from edge.sinks.influx import InfluxSink, InfluxSinkConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds peers.py
from peers import Peer, start_influxdb1
from test_influx_sink import GATEWAY, delivered, influxql


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[Peer]:
    peer = start_influxdb1(tmp_path / "influx")
    try:
        yield peer
    finally:
        peer.stop()


async def test_samples_and_records_carry_the_asset_levels(influxdb: Peer,
                                                         tmp_path: Path) -> None:
    """Samples of a device are tagged with its path (an override's levels for a device
    placed elsewhere); a record with the path of the device its tag belongs to."""
    asset = AssetConfig(enterprise="acme", site="dresden", area="etch", line="line1",
                        cell="cell3",
                        devices={"stf/motor1": AssetLevels(area="assembly", line="l2",
                                                           cell="press")})
    reg = TagRegistry()
    reg.add("etch1", "chamber_temp")
    reg.add("stf/motor1", "current")
    cfg = InfluxSinkConfig(name="influx", url=influxdb.url, database="asset",
                           create_database=True)
    sink = InfluxSink(cfg, gateway_id=GATEWAY, tags=reg, asset=asset)
    now = time.time_ns()
    batch = SampleBatch([0, 1], [now, now], [150.0, 2.5])
    trip = InterlockTrip(now, "jam", "stf/motor1/current", ">", 2.5, 2.0, "stop", True, 1)
    async with delivered(tmp_path, sink, [batch, [trip]]):
        pass
    rows = await influxql(influxdb, "asset",
                          "SELECT chamber_temp FROM etch1 WHERE site='dresden' AND "
                          "area='etch' AND line='line1' AND cell='cell3' AND enterprise='acme'")
    assert [r["chamber_temp"] for r in rows] == [150.0]
    rows = await influxql(influxdb, "asset",
                          "SELECT current FROM \"stf/motor1\" WHERE area='assembly' AND "
                          "cell='press'")
    assert [r["current"] for r in rows] == [2.5]
    rows = await influxql(influxdb, "asset",
                          "SELECT value FROM interlock_trip WHERE line='l2'")
    assert [r["value"] for r in rows] == [2.5]


def test_a_static_tag_named_like_an_asset_level_fails_check_config() -> None:
    """tags = {site = ...} beside an [asset] site is refused, not silently overwritten."""
    from edge.app import Gateway

    cfg = loads('[asset]\nenterprise = "acme"\nsite = "d"\n'
                '[[sinks]]\ntype = "influx"\nname = "influx"\n'
                'url = "http://127.0.0.1:1"\ndatabase = "x"\n'
                'tags = { site = "fab1", owner = "me" }\n')
    with pytest.raises(ConfigError, match=r"sink 'influx': tags\.site is also set by"):
        Gateway(cfg, secrets=lambda n: n).check()
