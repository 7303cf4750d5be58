"""Device clocks that jump: flagged and quarantined with a reason; late data passes.

A device's *offset* is its sample timestamp minus the gateway clock when the sample
arrived. It follows a baseline (starting at 0, an NTP-synced device; then moved by the
samples it accepts). Per sample, against the baseline:

* within ``jump_s``: accepted, and the baseline follows it;
* ahead by more than ``jump_s``: a clock jump forward (data cannot come from the
  future): quarantined at once;
* behind by more than ``jump_s``: late data (a file or a buffered burst from hours ago)
  or a clock that jumped back. They differ in pace: a clock that jumped back keeps
  ticking with the real time, a late burst arrives much faster than its timestamps
  advance (or out of order). Behind samples are held until that is clear: late data is
  then passed on whole, with its own timestamps (never dropped as "old"); a jump back
  (judged ``confirm_s`` after the first held sample came, or when the device's clock is
  back: at least ``MIN_PACED`` samples in order, covering half of ``confirm_s`` or more
  of device time and not more than twice the real time since the first came plus
  2 x ``confirm_s`` of slack for a gateway that stalled) is quarantined, held samples
  included, while the device's samples stay at that offset. Behind samples at another
  offset than the jumped clock's are late data. Limit: a late burst of one device that
  is in order and covers less than about 2 x ``confirm_s`` of device time is taken for
  a jump back (a real flush after an outage covers the outage, far longer).

Invariants: every sample of a watched device leaves the stage exactly once, either in a
batch (now, or later once judged late) or in a ``Quarantine`` record's evidence with
reason ``clock_jump: ...``; samples of other devices pass untouched. Held samples are
bounded (``max_hold``; beyond it they are judged at once). The interlocks judge raw data
before this stage on the fast lane; held samples reach health, SPC and the journal late.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.components import BuildContext, StageOutput
from edge.config import ConfigStruct
from edge.errors import ConfigError
from edge.model import Quarantine, Record, Sample, SampleBatch, TagRegistry

REASON = "clock_jump"
MIN_PACED = 3  # fewer held samples than this are never taken for a jumped clock


class ClockCheckConfig(ConfigStruct, frozen=True):
    """``[[clock_checks]]``: watch the timestamps of some devices' samples."""

    name: str
    devices: tuple[str, ...]  # every tag of these devices is watched, each device apart
    jump_s: float = 5.0  # an offset change beyond this is a jump (or late data)
    confirm_s: float = 1.0  # behind at real-time pace this long = the clock jumped back
    max_hold: int = 10_000  # behind samples held per device while that is decided

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if not self.devices:
            raise ValueError("devices must name at least one device")
        if not (math.isfinite(self.jump_s) and self.jump_s > 0):
            raise ValueError("jump_s must be > 0")
        if not 0 < self.confirm_s <= 3600:
            raise ValueError("confirm_s must be > 0 and <= 3600")
        if not 1 <= self.max_hold <= 1_000_000:
            raise ValueError("max_hold must be between 1 and 1000000")

    def declare_tags(self, tags: TagRegistry) -> None:
        """The check adds no tags."""


@dataclass(slots=True)
class _Device:
    name: str
    check: str
    tags: TagRegistry
    ids: npt.NDArray[np.int32]
    jump_ns: int
    confirm_ns: int
    max_hold: int
    base_ns: float = 0.0
    jumped_back: bool = False
    jump_off_ns: float = 0.0
    held: list[SampleBatch] = field(default_factory=list)
    held_off: list[npt.NDArray[np.float64]] = field(default_factory=list)  # at arrival
    held_at: list[int] = field(default_factory=list)  # when each held batch came
    held_n: int = 0

    def judge(self, rows: SampleBatch, now_ns: int, out: list[SampleBatch],
              records: list[Record]) -> None:
        d = (rows.ts_ns - now_ns) - self.base_ns
        ahead, behind = d > self.jump_ns, d < -self.jump_ns
        ok = ~(ahead | behind)
        if ahead.any():
            self._quarantine(rows.take(ahead), now_ns, float(d[ahead].mean()), records)
        if ok.any():
            self.base_ns += 0.2 * float(d[ok].mean())  # follows latency and slow drift
            self.jumped_back = False
            if self.held:  # the clock is back (or never left): judge what was held now
                self.decide(now_ns, out, records, final=True)
            out.append(rows.take(ok))
        if self.jumped_back and behind.any():  # still at the jumped clock's offset
            jumped = behind & (np.abs(d - self.jump_off_ns) <= self.jump_ns)
            if jumped.any():
                self._quarantine(rows.take(jumped), now_ns, float(d[jumped].mean()), records)
                behind &= ~jumped
        if behind.any():
            self.held.append(rows.take(behind))
            self.held_off.append(np.asarray(d[behind], np.float64))
            self.held_at.append(now_ns)
            self.held_n += int(behind.sum())
            self.decide(now_ns, out, records, final=self.held_n >= self.max_hold)

    def decide(self, now_ns: int, out: list[SampleBatch], records: list[Record], *,
               final: bool = False) -> None:
        """Judge the held samples once their pace tells late data from a jump back."""
        if not self.held:
            return
        held = SampleBatch.concat(self.held)
        off = np.concatenate(self.held_off)
        came = np.repeat(np.array(self.held_at, np.int64), [len(b) for b in self.held])
        bins = np.floor(off / self.jump_ns)  # the biggest group shares one clock; the
        keys, counts = np.unique(bins, return_counts=True)  # rest is late data aside
        mid = float(np.median(off[bins == keys[np.argmax(counts)]]))
        core = np.abs(off - mid) <= self.jump_ns
        ts = held.ts_ns[core]
        waited = now_ns - int(came[core].min())
        span = int(ts.max() - ts.min())
        # Device time running far ahead of the time they took to come: a burst. The
        # slack (2 x confirm_s) covers a gateway that stalled and took seconds at once.
        if span > 2 * waited + 2 * self.confirm_ns or bool((np.diff(ts) < 0).any()):
            self._release(out)
        elif waited >= self.confirm_ns or final:
            # a clock: in order, covering half of confirm_s or more, at about real time
            if ts.shape[0] >= MIN_PACED and 2 * span >= self.confirm_ns:
                self.jumped_back, self.jump_off_ns = True, mid
                self._clear()
                self._quarantine(held.take(core), now_ns, float(off[core].mean()), records)
                if not core.all():
                    out.append(held.take(~core))
            else:
                self._release(out)
        elif not core.all() and now_ns - int(came[~core].min()) >= self.confirm_ns:
            # samples at other offsets than the group still being judged: late data
            out.append(held.take(~core))
            self._clear()
            self.held, self.held_off, self.held_at = [held.take(core)], [off[core]], \
                [int(came[core].min())]
            self.held_n = len(self.held[0])

    def _release(self, out: list[SampleBatch]) -> None:
        out.extend(self.held)
        self._clear()

    def _clear(self) -> None:
        self.held, self.held_off, self.held_at, self.held_n = [], [], [], 0

    def _quarantine(self, rows: SampleBatch, now_ns: int, off_ns: float,
                    records: list[Record]) -> None:
        way = "ahead of" if off_ns > 0 else "behind"
        records.append(Quarantine(
            ts_ns=now_ns, source=self.check,
            reason=f"{REASON}: {self.name} clock {abs(off_ns) / 1e9:.1f} s {way} the gateway "
                   f"clock (beyond jump_s {self.jump_ns / 1e9:g} s): {len(rows)} samples set "
                   f"aside",
            where=self.name, subject=self.name,
            evidence=[Sample(self.tags[t].key, a, v, q) for t, a, v, q in zip(
                rows.tag_id.tolist(), rows.ts_ns.tolist(), rows.value.tolist(),
                rows.quality.tolist(), strict=True)]))


class ClockCheck:
    """The clock-jump stage, for every configured check."""

    name = "clock"

    def __init__(self, configs: Sequence[ClockCheckConfig], tags: TagRegistry,
                 ctx: BuildContext | None = None) -> None:
        self.tags = tags
        self.devices: list[_Device] = []
        watched: dict[str, str] = {}
        for cfg in configs:
            for dev in cfg.devices:
                if dev in watched:
                    raise ConfigError(f"clock_checks '{cfg.name}': device '{dev}' is already "
                                      f"watched by clock_checks '{watched[dev]}'")
                watched[dev] = cfg.name
                ids = np.array([t.id for t in tags if t.device == dev], np.int32)
                if not ids.shape[0]:
                    raise ConfigError(f"clock_checks '{cfg.name}': devices: no source declares"
                                      f" tags of device '{dev}'")
                self.devices.append(_Device(dev, cfg.name, tags, ids, round(cfg.jump_s * 1e9),
                                            round(cfg.confirm_s * 1e9), cfg.max_hold))
        # Which device (index + 1; 0: none) owns each tag id: one lookup per batch
        # instead of an np.isin (a sort) per device.
        top = max((int(d.ids.max()) for d in self.devices), default=-1)
        self._owner = np.zeros(top + 2, np.int32)
        for i, d in enumerate(self.devices):
            self._owner[d.ids] = i + 1

    def process(self, batch: SampleBatch, records: Sequence[Record], now_ns: int) -> StageOutput:
        out = StageOutput(batch, list(records))
        if not len(batch):
            return out
        owner = self._owner[np.minimum(batch.tag_id, self._owner.shape[0] - 1)]
        if not owner.any():
            return out
        parts = [batch.take(owner == 0)]
        for i in np.unique(owner[owner > 0]).tolist():
            self.devices[i - 1].judge(batch.take(owner == i), now_ns, parts, out.records)
        out.batch = SampleBatch.concat([p for p in parts if len(p)])
        return out

    def tick(self, now_ns: int) -> StageOutput:
        parts: list[SampleBatch] = []
        records: list[Record] = []
        for dev in self.devices:
            dev.decide(now_ns, parts, records)
        return StageOutput(SampleBatch.concat(parts), records)

    def states(self) -> dict[str, dict[str, object]]:
        """Per device: its clock offset baseline, samples held, jumped back or not."""
        return {d.name: {"offset_s": d.base_ns / 1e9, "held": d.held_n,
                         "jumped_back": d.jumped_back} for d in self.devices}
