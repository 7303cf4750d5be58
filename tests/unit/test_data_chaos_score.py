"""Data chaos scored against hw_sim's truth: the motor line's messages with other
spellings, mixed time zones, late out-of-order bursts and jumping clocks, through the
MQTT source's decoding and the clock check. Every good value is kept exactly once under
its canonical tag; every spoiled one is quarantined with the clock_jump reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from edge.components import BuildContext
from edge.config import loads
from edge.model import Quarantine, SampleBatch, TagRegistry
from edge.processing.clock import ClockCheck, ClockCheckConfig
from edge.runtime.metrics import Metrics
from edge.sources.file.csv_parse import CmmParser
from edge.sources.mqtt import MqttSource, MqttSourceConfig
from hw_sim.baddata import CHAOS, BadData
from hw_sim.clock import SimClock
from hw_sim.cmm import CSV_HEADER, CmmModel, CmmWriter
from hw_sim.motors import MOTOR_IDS, MotorLine
from hw_sim.motors_mqtt import MotorPublisher
from hw_sim.truth import TruthLog

DEVICES = [m.replace("/", "_") for m in MOTOR_IDS]
CONFIG = f"""
[[sources]]
type = "mqtt"
name = "stf"
[[sources.subscriptions]]
topic = "stf/+/+/telemetry"
device = "{{1}}_{{2}}"
devices = {DEVICES!r}
spelling = "loose"
ts_field = "ts"
fields = [{{ path = "current_a", tag = "current_a", unit = "A" }}]
"""
Key = tuple[str, int, float]  # canonical tag, ts in ms, value


def _ms(ts_ns: int) -> int:
    return round(ts_ns / 1e6)


def test_every_good_value_kept_once_every_spoiled_one_quarantined(tmp_path: Path) -> None:
    """95 s of the 14-motor line with 4 % of the messages in the chaos kinds: the kept
    samples equal the truth's good values (late ones at their own old times) exactly
    once, and the quarantined ones are exactly the clock-jump messages."""
    truth = TruthLog()
    line = MotorLine(11, 1.0, truth=truth)
    bad = BadData(rate=0.04, kinds=CHAOS, late_burst=15)
    pub = MotorPublisher(line, SimClock(), bad=bad, seed=11, truth=truth)
    cfg = loads(CONFIG).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    src = MqttSource(cfg, BuildContext("gw", tags, Metrics(), tmp_path, lambda n: ""))
    check = ClockCheck([ClockCheckConfig(name="clocks", devices=tuple(DEVICES))], tags)

    kept: Counter[Key] = Counter()
    quarantined: Counter[Key] = Counter()
    reasons: Counter[str] = Counter()
    sent: list[tuple[str, int, float]] = []  # every motor sample: (tag, true ts, value)

    def take(batch: SampleBatch, records: list[object]) -> None:
        for t, ts, v in zip(batch.tag_id.tolist(), batch.ts_ns.tolist(),
                            batch.value.tolist(), strict=True):
            kept[(tags[t].key, _ms(ts), v)] += 1
        for r in records:
            assert isinstance(r, Quarantine), r
            reasons[r.reason.split(":")[0]] += 1
            for s in r.evidence:
                quarantined[(s.tag, _ms(s.ts_ns), s.value)] += 1

    for k in range(950):
        if k == 900:  # the last 5 s are clean: a jump in progress runs to its end
            pub.defects.cfg = BadData()
        samples = line.step()
        now = samples[0].ts_ns + 5_000_000  # arrives 5 ms later on the gateway clock
        sent += [(f"{s.station}_{s.component}/current_a", s.ts_ns, s.current_a)
                 for s in samples]
        ids, ts, vals, records = [], [], [], []
        for topic, payload in pub.render(samples):
            got = src.handle(topic, payload, now)
            if isinstance(got, Quarantine):
                records.append(got)
                continue
            assert not isinstance(got, tuple) or len(got) == 4
            _, tag_ids, t_ns, v = got  # type: ignore[misc]
            ids.append(tag_ids)
            ts.append(t_ns)
            vals.append(v)
        batch = SampleBatch(np.concatenate(ids), np.concatenate(ts), np.concatenate(vals)) \
            if ids else SampleBatch.empty()
        out = check.process(batch, records, now)
        take(out.batch, list(out.records))
        tick = check.tick(now)
        take(tick.batch, list(tick.records))
    end = check.tick(now + 2_000_000_000)  # judge what is still held
    take(end.batch, list(end.records))

    events = {(e["motor"].replace("/", "_") + "/current_a", e["t_ns"]): e
              for e in truth.of_kind("bad_data", "motors")}
    still_held = {round(json.loads(p)["ts"] * 1000) for _, p in pub.chaos.late}  # unsent
    want_kept: Counter[Key] = Counter()
    want_quarantined: Counter[Key] = Counter()
    for tag, t_ns, value in sent:
        e = events.get((tag, t_ns))
        if e is None or e["defect"] in ("spelling", "mixed_tz"):
            want_kept[(tag, _ms(t_ns), value)] += 1
        elif e["defect"] == "late":
            if _ms(e["sent_ts_ns"]) not in still_held:
                want_kept[(tag, _ms(e["sent_ts_ns"]), value)] += 1
        else:
            assert e["defect"] == "clock_jump" and e["good"] is False
            want_quarantined[(tag, _ms(e["sent_ts_ns"]), value)] += 1
    by_kind = Counter(e["defect"] for e in events.values())
    assert all(by_kind[k] > 20 for k in CHAOS), by_kind

    lost = want_kept - kept
    extra = kept - want_kept
    assert not lost and not extra, (f"lost {sum(lost.values())} e.g. {list(lost)[:3]}; "
                                    f"extra {sum(extra.values())} e.g. {list(extra)[:3]}")
    assert quarantined == want_quarantined
    assert set(reasons) == {"clock_jump"}
    print(f"SCORE data_chaos: good={sum(want_kept.values())} kept_once="
          f"{sum(kept.values())} spoiled={sum(want_quarantined.values())} quarantined="
          f"{sum(quarantined.values())} by_kind={dict(by_kind)}")


def test_cmm_file_with_mixed_time_zones_parses_to_the_true_instants(tmp_path: Path) -> None:
    """hw_sim writes half of a daily CMM file's rows in other UTC offsets (New York to
    Tokyo); the file source's parser gives every row its true instant, none refused."""
    truth = TruthLog()
    model = CmmModel(5)
    writer = CmmWriter(tmp_path, "daily", seed=5, bad=BadData(rate=0.5, kinds=("mixed_tz",)),
                       truth=truth)
    parts = [model.measure_part(60.0 * k) for k in range(1, 21)]
    for part in parts:
        writer.write(part)
    [path] = tmp_path.glob("cmm-*.csv")
    lines = path.read_bytes().splitlines()
    parser = CmmParser({}, None)
    assert parser.set_header(lines[0]) is None
    got = parser.parse(list(enumerate(lines[1:], start=2)), set())
    assert not got.errors
    want = [(r.part_id, r.feature, r.ts_ns) for p in parts for r in p.rows]
    assert [(r.part_id, r.feature, r.ts_ns) for r in got.rows] == want
    offsets = {line.split(b",")[0][-6:] for line in lines[1:]}
    mixed = len(truth.of_kind("bad_data", "cmm"))
    assert len(offsets) >= 4 and 10 < mixed < 50, (offsets, mixed)


def test_cmm_late_file_holds_rows_from_hours_ago_out_of_order(tmp_path: Path) -> None:
    """hw_sim holds a share of the CMM rows back and drops them later as late-*.csv,
    measured 3 h earlier and shuffled: parsed, the part files and the late files hold
    every row exactly once, the late ones at their own (old) instants."""
    truth = TruthLog()
    model = CmmModel(6)
    writer = CmmWriter(tmp_path, "part", seed=6, truth=truth,
                       bad=BadData(rate=0.3, kinds=("late",), late_burst=6))
    parts = [model.measure_part(60.0 * k) for k in range(1, 31)]
    for part in parts:
        writer.write(part)
    got: list[tuple[str, str, int]] = []
    late_files = sorted(tmp_path.glob("late-*.csv"))
    for path in sorted(tmp_path.glob("*.csv")):
        lines = path.read_bytes().splitlines()
        parser = CmmParser({}, None)
        assert parser.set_header(lines[0]) is None
        result = parser.parse(list(enumerate(lines[1:], start=2)), set())
        assert not result.errors, (path, result.errors[:2])
        got += [(r.part_id, r.feature, r.ts_ns) for r in result.rows]
    late = {(e["part_id"], e["feature"]): e["sent_ts_ns"]
            for e in truth.of_kind("bad_data", "cmm") if e["defect"] == "late"}
    parser = CmmParser({}, None)  # rows still held for the next late file: in no file yet
    assert parser.set_header(CSV_HEADER.encode()) is None
    unsent = parser.parse([(2, r.encode()) for r in writer._late], set()).rows
    got += [(r.part_id, r.feature, r.ts_ns) for r in unsent]
    want = [(r.part_id, r.feature, late.get((r.part_id, r.feature), r.ts_ns))
            for p in parts for r in p.rows]
    assert len(late_files) >= 3 and len(late) > 18
    assert Counter(got) == Counter(want)
    measured = {(r.part_id, r.feature): r.ts_ns for p in parts for r in p.rows}
    assert all(measured[k] - ts == 3 * 3600 * 10**9 for k, ts in late.items())  # 3 h older
