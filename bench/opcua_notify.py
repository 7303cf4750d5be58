"""asyncua's cost per tag write and per subscribed client, in-process (no network).

A server with 1,000 Double variables; 0, 1 and 5 subscriptions each monitoring every
variable (queue 1); 5,000 writes per measurement, thread CPU time per write, median of 3,
with asyncua's own per-client ``deepcopy`` of each value and with ``edge.sinks.
opcua_notify``'s scalar copy, alternated in the same run.

    .venv/bin/python bench/opcua_notify.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asyncua import Server, ua
from asyncua.server import monitored_item_service as mis

from edge.sinks import opcua_notify

ORIGINAL = mis.MonitoredItemValues.set_current_datavalue


class _Quiet:
    def datachange_notification(self, *args: object) -> None:
        pass


async def main() -> None:
    server = Server()
    await server.init()
    idx = await server.register_namespace("urn:bench")
    nodes = [await server.nodes.objects.add_variable(ua.NodeId(f"v{i}", idx), f"v{i}", 0.0)
             for i in range(1000)]
    ids = [n.nodeid for n in nodes]
    write = server.write_attribute_value

    async def per_write() -> float:
        t, n = time.thread_time(), 0
        for k in range(5):
            for nid in ids:
                await write(nid, ua.DataValue(ua.Variant(k + time.time(), ua.VariantType.Double)))
                n += 1
        return (time.thread_time() - t) / n * 1e6

    subs = 0
    for target in (0, 1, 5):
        while subs < target:
            sub = await server.create_subscription(1000, _Quiet())
            await sub.subscribe_data_change(nodes, queuesize=1)
            subs += 1
        res: dict[str, list[float]] = {"deepcopy": [], "scalar copy": []}
        for _ in range(3):
            for mode, times in res.items():
                mis.MonitoredItemValues.set_current_datavalue = (  # type: ignore[method-assign]
                    ORIGINAL if mode == "deepcopy" else opcua_notify._set_current_datavalue)
                times.append(await per_write())
        print(f"{target} subscriptions: us per write: asyncua deepcopy "
              f"{statistics.median(res['deepcopy']):.1f}, scalar copy "
              f"{statistics.median(res['scalar copy']):.1f} "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
