"""The bare path the MQTT record bench compares the gateway with: aiomqtt + httpx, no
journal, no ack after commit (paho acknowledges each QoS 1 message on receipt).

Subscribes ``<root>/+/result`` at QoS 1, compensates each JSON CMM result to 20 C in
Python and POSTs what is queued (up to 1,000 results) as one batch of measurement
records to the MES, one request at a time. A message that arrives while the MES is
down is lost: this is the floor of per-message cost, not a delivery guarantee.

    python bench/mqtt_records_bare.py --broker-port 1883 --mes http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiomqtt
import httpx

ALPHA_PART = 23.6e-6
NOMINAL_MM, TOL_MM = 50.0, 0.02


def record(payload: bytes, seq: int) -> dict[str, object]:
    m = json.loads(payload)
    l20 = m["length_mm"] / (1 + ALPHA_PART * (m["t_part_c"] - 20.0))
    return {"id": f"bare-{seq}", "type": "measurement", "part_id": m["part"],
            "feature": m["feature"], "measured_mm": m["length_mm"], "l20_mm": l20,
            "ok": abs(l20 - NOMINAL_MM) <= TOL_MM, "ts": m["ts"]}


async def run(port: int, mes: str, root: str) -> None:
    seq = 0
    async with httpx.AsyncClient(base_url=mes, timeout=10) as http, aiomqtt.Client(
            "127.0.0.1", port, identifier=f"bare-{root}", clean_session=False) as mqtt:
        await mqtt.subscribe(f"{root}/+/result", qos=1)
        batch: list[dict[str, object]] = []
        async for message in mqtt.messages:
            assert isinstance(message.payload, bytes)
            seq += 1
            batch.append(record(message.payload, seq))
            if len(mqtt.messages) and len(batch) < 1000:
                continue
            r = await http.post("/api/v1/records", json={"gateway_id": "bare", "records": batch},
                                headers={"Idempotency-Key": f"bare-{seq}"})
            r.raise_for_status()
            batch = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--broker-port", type=int, required=True)
    ap.add_argument("--mes", required=True)
    ap.add_argument("--root", default="bare")
    args = ap.parse_args()
    asyncio.run(run(args.broker_port, args.mes, args.root))


if __name__ == "__main__":
    main()
