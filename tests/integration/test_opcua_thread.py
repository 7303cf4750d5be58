"""The OPC-UA server on its own thread (``threaded = true``), seen by a real client."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path

from asyncua import Client, ua
from opcua_fixtures import NS_URI, FakeGateway, demo_registry
from peers import free_port

from edge.components import BuildContext, Hooks
from edge.model import SampleBatch
from edge.runtime.metrics import Metrics
from edge.sinks.opcua import OpcUaConfig
from edge.sinks.opcua_thread import ThreadedOpcUaSink

TS0 = 1_700_000_000_000_000_000


async def test_threaded_server_serves_values_history_status_and_reset(tmp_path: Path) -> None:
    """With the server on its own thread a client reads published values and their history,
    the status document is mirrored, the Reset method reaches the condition board on the
    main loop (the latch is released, the action audited with its origin), and stopping
    the sink ends the server thread."""
    gw = FakeGateway()
    cfg = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{free_port()}/edge", threaded=True)
    ctx = BuildContext("gw-test", demo_registry(), Metrics(), tmp_path / "state",
                       lambda n: "", Hooks(status=lambda: gw.status, conditions=gw.board))
    sink = cfg.build(ctx)
    assert isinstance(sink, ThreadedOpcUaSink)
    task = asyncio.create_task(sink.run())
    try:
        await asyncio.wait_for(sink.started.wait(), 120)
        assert sink.inner._history is not None
        await asyncio.wait_for(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            sink.inner._history.ready.wait(), sink._loop)), 60)  # type: ignore[arg-type]
        now = datetime.now(UTC)
        ts = int(now.timestamp() * 1e6) * 1000 + 1_000_000
        sink.publish(SampleBatch([1, 1], [ts, ts + 1_000_000], [12.5, 13.5]), [])
        async with Client(sink.endpoint, timeout=30) as c:
            idx = await c.get_namespace_index(NS_URI)
            node = c.get_node(ua.NodeId("etch1/pressure", idx))

            async def value() -> object:  # BadWaitingForInitialData until the first write
                dv = await node.read_data_value(raise_on_bad_status=False)
                return dv.Value.Value if dv.StatusCode.is_good() else None

            deadline = asyncio.get_running_loop().time() + 30
            while await value() != 13.5:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            hist = await node.read_raw_history(now, datetime.now(UTC).replace(year=now.year + 1))
            assert [dv.Value.Value for dv in hist] == [12.5, 13.5]
            interlock = c.get_node(ua.NodeId("_interlocks/etch_overtemp", idx))
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the status loop mirrors the interlock after its first round
                with contextlib.suppress(ua.UaStatusCodeError):
                    await interlock.read_browse_name()
                    break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            out = await interlock.call_method(ua.NodeId("_interlocks/etch_overtemp/Reset", idx))
            assert out is True
        assert gw.resets == ["etch_overtemp"]
        assert [(a.origin, a.action, a.ok) for a in gw.actions] == [("opcua", "reset", True)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not [t for t in threading.enumerate() if t.name == "opcua-opcua"]
