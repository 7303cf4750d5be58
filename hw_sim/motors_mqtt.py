"""The motor line on MQTT (aiomqtt), wrapping `MotorLine`.

Topics (station/component as in `hw_sim.motors`):

* `stf/<station>/<component>/telemetry` (mode "json", one message per tick):
  `{"ts": <epoch s, float>, "current_a": float, "state": "idle|inrush|running|
  stopped", "position_mm": float|null, "barriers": {"L1": bool, ..}}`, barriers
  only on the conveyor station's components;
* `stf/<station>/<component>/batch` (mode "batch", one message per `batch_ticks`):
  `{"ts": [..], "current_a": [..], "state": [..], "position_mm": [..]}`;
* commands in on `stf/command`: `{"cmd": "stop"|"reset"|"replace", "target":
  "<station>/<component>"|"<station>"|"all"}`.

The physics runs on its own tick task whether or not the broker is reachable;
what cannot be published while disconnected is counted in `dropped`, never
queued. A tick's messages are handed to the client together, in motor order: at
QoS 0 straight to paho's queue, at QoS 1 with their confirmations awaited together;
one write wake-up per tick, not one per message. Health truth (`health_every_s`)
comes from the line's kept failure forecast, run on in a worker thread: only the
ticks since the last call. The connection is retried with a 1 s back-off and the
command topic is subscribed again after each connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

from .baddata import CHAOS, BadData, Defects
from .chaos import Chaos, iso_in_offset
from .clock import SimClock, ticks
from .motors import MOTOR_IDS, MotorLine, MotorSample
from .truth import TruthLog, iso_ns

log = logging.getLogger("hw_sim.motors")
COMMAND_TOPIC = "stf/command"
# json.dumps with separators builds an encoder per call (14 per tick); the same
# encoder, made once, gives the same bytes
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def telemetry_topic(motor_id: str) -> str:
    return f"stf/{motor_id}/telemetry"


def batch_topic(motor_id: str) -> str:
    return f"stf/{motor_id}/batch"


class MotorPublisher:
    """Publishes a `MotorLine` to an MQTT broker and obeys `stf/command`."""

    def __init__(
        self,
        line: MotorLine,
        clock: SimClock,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        mode: str = "json",
        batch_ticks: int = 10,
        qos: int = 0,
        bad: BadData | None = None,
        seed: int = 0,
        truth: TruthLog | None = None,
        health_every_s: float = 600.0,
        horizon_ticks: int = 36_000,
    ) -> None:
        if mode not in ("json", "batch"):
            raise ValueError(f"motors mode must be 'json' or 'batch', got {mode!r}")
        self.line, self.clock, self.host, self.port = line, clock, host, port
        self.mode, self.batch_ticks, self.qos = mode, max(1, batch_ticks), qos
        self.defects = Defects(seed, 3, bad or BadData())
        self.chaos = Chaos(seed, 3, bad or BadData())
        self.truth = truth
        self.health_every_ticks = max(1, round(health_every_s / line.tick_s))
        self.horizon_ticks = horizon_ticks
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.published = self.dropped = self.commands = 0
        self._batch: dict[str, list[MotorSample]] = {m: [] for m in MOTOR_IDS}

    async def run(self) -> None:
        """Run until cancelled: the tick task and the broker connection."""
        ticker = asyncio.create_task(self._ticks(), name="motors-ticks")
        try:
            await self._connection()
        finally:
            ticker.cancel()
            # Bounded: on Python 3.11 a cancel that lands while the tick generator is
            # suspended can leave the task waiting on an already finished future for
            # good (seen in about one run in three); shutdown must not hang on it.
            await asyncio.wait({ticker}, timeout=2.0)

    async def _connection(self) -> None:
        while True:
            try:
                client = aiomqtt.Client(self.host, self.port)
                # a tick's messages are in flight together (twice 14 with duplicates);
                # aiomqtt logs a warning per publish above its default of 10
                client.pending_calls_threshold = 4 * len(MOTOR_IDS)
                async with client:
                    await client.subscribe(COMMAND_TOPIC, qos=1)
                    self.client = client
                    self.connected.set()
                    async for msg in client.messages:
                        self._on_command(
                            bytes(msg.payload)
                            if isinstance(msg.payload, bytes | bytearray)
                            else str(msg.payload).encode()
                        )
            except aiomqtt.MqttError as exc:
                log.warning("mqtt %s:%s: %s; retrying in 1 s", self.host, self.port, exc)
            finally:
                self.client = None
                self.connected.clear()
            await asyncio.sleep(1.0)

    def _on_command(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
            self.line.command(str(msg["cmd"]), str(msg.get("target", "all")))
            self.commands += 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored command %r: %s", payload[:200], exc)

    async def _ticks(self) -> None:
        async for k, _ts in ticks(self.clock, self.line.tick_s):
            if k == 0:
                continue
            samples = self.line.step()
            if self.line.tick % self.health_every_ticks == 1:
                await self._health()
            out = self.render(samples)
            if out:
                await self._send(out)

    def render(self, samples: list[MotorSample]) -> list[tuple[str, bytes]]:
        """The messages of one tick, bad data applied (a late one comes in a later burst)."""
        out: list[tuple[str, bytes]] = []
        if self.mode == "json":
            for s in samples:
                out += self._telemetry(s)
        else:
            for s in samples:
                buf = self._batch[f"{s.station}/{s.component}"]
                buf.append(s)
                if len(buf) >= self.batch_ticks:
                    out += self._batched(buf)
                    buf.clear()
        return out

    async def _health(self) -> None:
        forecast, tick = self.line.forecast(), self.line.tick
        ttf = await asyncio.to_thread(forecast.ttf, tick, self.horizon_ticks)
        self.line.emit_health(ttf, self.horizon_ticks)
        self.line.emit_energy()

    def _ts(self, s: MotorSample, defect: str | None, shift_ns: int = 0,
            offset_min: int = 0) -> float | str:
        ts = self.defects.drifted(s.ts_ns, self.line.start_ns) + shift_ns
        if defect == "naive_ts":
            return iso_ns(ts).removesuffix("+00:00")
        if defect == "mixed_tz":
            return iso_in_offset(ts, offset_min)
        return round(ts / 1e9, 3)

    def _pick(self, motor: str) -> tuple[str | None, int, int]:
        """(defect, ns added to the timestamps, UTC offset in minutes) of a message."""
        shift, defect = self.chaos.shift(motor, self.defects.pick())
        return defect, shift, self.chaos.offset_min() if defect == "mixed_tz" else 0

    def _telemetry(self, s: MotorSample) -> list[tuple[str, bytes]]:
        motor = f"{s.station}/{s.component}"
        defect, shift, tz = self._pick(motor)
        body: dict[str, Any] = {
            "ts": self._ts(s, defect, shift, tz),
            "current_a": s.current_a,
            "state": s.state,
            "position_mm": s.position_mm,
        }
        if s.barriers is not None:
            body["barriers"] = s.barriers
        return self._spoil(motor, telemetry_topic, body, defect, s.ts_ns, shift)

    def _batched(self, buf: list[MotorSample]) -> list[tuple[str, bytes]]:
        m = f"{buf[0].station}/{buf[0].component}"
        defect, shift, tz = self._pick(m)
        body: dict[str, Any] = {
            "ts": [self._ts(s, defect, shift, tz) for s in buf],
            "current_a": [s.current_a for s in buf],
            "state": [s.state for s in buf],
            "position_mm": [s.position_mm for s in buf],
        }
        return self._spoil(m, batch_topic, body, defect, buf[-1].ts_ns, shift)

    def _spoil(
        self, motor: str, topic_of: Any, body: dict[str, Any], defect: str | None, ts_ns: int,
        shift_ns: int = 0,
    ) -> list[tuple[str, bytes]]:
        topic = topic_of(self.chaos.spelled(motor) if defect == "spelling" else motor)
        if defect == "missing":
            if isinstance(body["current_a"], list):
                body["current_a"][0] = None
            else:
                body["current_a"] = None
        payload = _ENCODE(body).encode()
        if defect == "garbage":
            payload = b"\x00\xffgarbage{" + payload[:7]
        if defect is not None and self.truth is not None:
            extra: dict[str, Any] = {}
            if defect in CHAOS:  # the sample as the gateway should keep it, or not
                extra = {"good": defect != "clock_jump", "sent_ts_ns": ts_ns + shift_ns}
            self.truth.emit("bad_data", "motors", ts_ns, defect=defect, motor=motor,
                            topic=topic, **extra)
        out = [(topic, payload)]
        if defect == "late":
            return self.chaos.hold(out[0])
        return out * 2 if defect == "duplicate" else out

    async def _send(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish in order. QoS 0 goes straight to paho's queue: there is nothing to
        confirm, and aiomqtt's publish costs a task, a future and a wake-up per message;
        QoS 1 confirmations are awaited all at once."""
        client = self.client
        if client is None:
            self.dropped += len(messages)
            return
        if self.qos == 0:
            paho_client = client._client  # aiomqtt's own paho client, as it publishes
            for topic, payload in messages:
                if paho_client.publish(topic, payload, 0).rc == mqtt.MQTT_ERR_SUCCESS:
                    self.published += 1
                else:  # the connection is gone: aiomqtt's publish would raise
                    self.dropped += 1
            return
        if len(messages) == 1:
            topic, payload = messages[0]
            try:
                await client.publish(topic, payload, qos=self.qos)
                self.published += 1
            except aiomqtt.MqttError:
                self.dropped += 1
            return
        # Tasks start in creation order, so paho queues the packets in this order.
        results = await asyncio.gather(
            *(client.publish(t, p, qos=self.qos) for t, p in messages), return_exceptions=True
        )
        for res in results:
            if res is None:
                self.published += 1
            elif isinstance(res, aiomqtt.MqttError):
                self.dropped += 1
            else:
                raise res
