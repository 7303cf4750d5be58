"""The OPC-UA server sink browses as the asset path: Devices/<enterprise>/.../<cell>/<device>."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from asyncua import Client, ua

from edge.asset import AssetConfig, AssetLevels
from edge.components import BuildContext, Hooks
from edge.runtime.metrics import Metrics
from edge.sinks.opcua import OpcUaConfig
from edge.sinks.opcua_thread import ThreadedOpcUaSink

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from opcua_fixtures import NS_URI, FakeGateway, demo_registry

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import free_port


async def test_a_client_browses_devices_under_their_asset_folders(tmp_path: Path) -> None:
    """A real OPC-UA client finds each device by its asset path (the override included)
    and its tags there; the device and tag node ids are the ones without [asset]."""
    asset = AssetConfig(enterprise="acme", site="dresden", area="etch", line="line1",
                        cell="cell3",
                        devices={"stf/motor1": AssetLevels(area="assembly", line="l2",
                                                           cell="press")})
    port = free_port()
    gw = FakeGateway()
    ctx = BuildContext(gateway_id="gw-test", tags=demo_registry(), metrics=Metrics(),
                       state_dir=tmp_path / "state", secrets=lambda n: "",
                       hooks=Hooks(status=lambda: gw.status, conditions=gw.board),
                       asset=asset)
    sink = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{port}/edge").build(ctx)
    assert isinstance(sink, ThreadedOpcUaSink)  # the default
    task = asyncio.create_task(sink.run())
    try:
        await asyncio.wait_for(sink.started.wait(), 120)  # a cold start builds a cache
        async with Client(f"opc.tcp://127.0.0.1:{port}/edge", timeout=30) as client:
            idx = await client.get_namespace_index(NS_URI)
            objects = client.nodes.objects
            etch = await objects.get_child(
                [f"{idx}:Devices", f"{idx}:acme", f"{idx}:dresden", f"{idx}:etch",
                 f"{idx}:line1", f"{idx}:cell3", f"{idx}:etch1"])
            assert etch.nodeid == ua.NodeId("etch1", idx)
            temp = await etch.get_child(f"{idx}:chamber_temp")
            assert temp.nodeid == ua.NodeId("etch1/chamber_temp", idx)
            motor = await objects.get_child(
                [f"{idx}:Devices", f"{idx}:acme", f"{idx}:dresden", f"{idx}:assembly",
                 f"{idx}:l2", f"{idx}:press", f"{idx}:stf/motor1", f"{idx}:current"])
            assert motor.nodeid == ua.NodeId("stf/motor1/current", idx)
            cell = client.get_node(ua.NodeId("_asset/acme/dresden/etch/line1/cell3", idx))
            definition = await cell.read_type_definition()
            assert definition == ua.NodeId(ua.ObjectIds.FolderType)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
