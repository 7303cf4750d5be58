"""CMM results over MQTT for system tests and the bench: the gateway's source config and
a publisher that counts what the broker acknowledged (PUBACK), one part id per message."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as paho

FEATURE = "bore_50"
NOMINAL_MM, TOL_MM = 50.0, 0.02
ALPHA_PART = 23.6e-6
TOPICS = [f"quality/st{k}/result" for k in range(4)]


def source_config(port: int, *, name: str = "quality", device: str = "cmm2",
                  client_id: str = "edge-quality") -> dict[str, Any]:
    """kind = "cmm" subscription, QoS 1, persistent session, dedup by the part id."""
    return {
        "type": "mqtt", "name": name, "host": "127.0.0.1", "port": port,
        "client_id": client_id, "clean_session": False, "qos": 1, "backoff_max_s": 1.0,
        "subscriptions": [{
            "topic": "quality/+/result", "kind": "cmm", "device": device, "ts_field": "ts",
            "id_field": "part",
            "cmm": {"part_id": "part", "feature": "feature", "measured_mm": "length_mm",
                    "part_temp_c": "t_part_c",
                    "features": {FEATURE: {"nominal_mm": NOMINAL_MM, "tol_mm": TOL_MM}}},
        }],
    }


def result(part: str, ts: float, t_part_c: float = 23.4) -> bytes:
    """One CMM result: a part 50 mm long at 20 C, measured at ``t_part_c``."""
    length = NOMINAL_MM * (1 + ALPHA_PART * (t_part_c - 20.0))
    return json.dumps({"part": part, "feature": FEATURE, "length_mm": round(length, 6),
                       "t_part_c": t_part_c, "ts": ts}).encode()


class Publisher:
    """Publishes one result per message at ``rate`` per second (QoS 1, over ``topics``,
    default ``TOPICS``) in a thread; ``acked`` holds the part ids the broker
    acknowledged, ``sent_ns`` the publish time of each."""

    def __init__(self, port: int, rate: float, prefix: str = "Q", max_inflight: int = 100,
                 topics: list[str] | None = None) -> None:
        self.port, self.rate, self.prefix = port, rate, prefix
        self.topics = TOPICS if topics is None else topics
        self.acked: set[str] = set()
        self.sent_ns: dict[str, int] = {}
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._mids: dict[int, str] = {}
        self._early: set[int] = set()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=f"pub-{prefix}-{time.time_ns()}")
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, daemon=True, name="cmm-publisher")

    def _on_publish(self, client: object, userdata: object, mid: int, reason: object,
                    props: object) -> None:
        with self._lock:
            part = self._mids.pop(mid, None)
            if part is not None:
                self.acked.add(part)
            else:  # the PUBACK came before publish() returned the mid
                self._early.add(mid)

    def start(self) -> Publisher:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the publisher, not a wait for correctness
            part = f"{self.prefix}-{i:08d}"
            now = time.time_ns()
            self.sent_ns[part] = now
            # Never call paho holding our lock: its PUBACK callback holds paho's own lock
            # and then takes ours.
            info = self.client.publish(self.topics[i % len(self.topics)], result(part, now / 1e9),
                                       qos=1)
            with self._lock:
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.acked.add(part)
                else:
                    self._mids[info.mid] = part
            self.sent = i = i + 1

    def stop(self, timeout: float = 20.0) -> None:
        """Stop publishing and wait (bounded) for the outstanding PUBACKs."""
        self._stop.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._mids:
                    break
            time.sleep(0.05)
        self.client.loop_stop()
        self.client.disconnect()
