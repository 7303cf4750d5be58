"""S7 source config and poll decoding, without a socket (edge.sources.s7)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from snap7.error import S7ConnectionError, S7ProtocolError, S7TimeoutError

from edge.components import BuildContext
from edge.config import ConfigError, convert, loads
from edge.model import Quality, Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.s7.config import S7SourceConfig
from edge.sources.s7.source import S7Source

TAGS = [{"name": "t", "address": "DB1.DBD8", "type": "REAL", "scale": 2.0, "offset": 1.0},
        {"name": "run", "address": "DB1.DBX0.0", "type": "BOOL"},
        {"name": "far", "address": "DB1.DBW400", "type": "INT"},
        {"name": "m", "address": "MW20", "type": "INT"}]


def config(**over: object) -> S7SourceConfig:
    raw: dict[str, object] = {"name": "plc1", "host": "127.0.0.1", "tags": TAGS,
                              "commands": [{"action": "stop", "address": "DB1.DBX52.0"}]}
    raw.update(over)
    return convert(raw, S7SourceConfig, "source 'plc1'")


def build(cfg: S7SourceConfig, tmp: Path) -> S7Source:
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), tmp, lambda n: ""))


@pytest.mark.parametrize(("over", "why"), [
    ({"tags": [{"name": "a", "address": "DB1.X", "type": "INT"}]}, "not an S7 address"),
    ({"tags": [{"name": "a", "address": "DB1.DBB0", "type": "BOOL"}]}, "needs a bit address"),
    ({"tags": [{"name": "a", "address": "DB1.DBW0", "type": "REAL"}]}, "use the D form"),
    ({"tags": [{"name": "a", "address": "DB1.DBB0", "type": "STRING[8]", "scale": 2.0}]},
     "is text: scale and offset are for numbers"),
    ({"tags": [{"name": "a", "address": "MW0", "type": "INT"}] * 2}, "used twice"),
    ({"tags": []}, "at least one tag"),
    ({"commands": [{"action": "x", "address": "MW0", "type": "INT", "value": 40000}]},
     "out of range for INT"),
    ({"commands": [{"action": "x", "address": "MW0"}]}, "needs a bit address"),
    ({"local_tsap": 0x100}, "local_tsap and remote_tsap go together"),
    ({"pdu_size": 100}, "pdu_size"),
    ({"slot": 40}, "slot"),
])
def test_config_errors_say_what_is_wrong(over: dict[str, object], why: str) -> None:
    """A config mistake is refused with the tag or command and the reason."""
    with pytest.raises(Exception, match=why):
        config(**over)


def test_loader_names_the_source_and_key() -> None:
    """Through the config loader, the error names the source."""
    with pytest.raises(ConfigError, match=r"plc1.*DB1\.DBQ0"):
        loads('[[sources]]\ntype = "s7"\nname = "plc1"\nhost = "h"\n'
              'tags = [{ name = "a", address = "DB1.DBQ0", type = "INT" }]\n')


def test_actions_dtypes_and_devices(tmp_path: Path) -> None:
    """actions() lists the commands; scaled tags are float64, others keep their type;
    S7 gives no CMM readings."""
    cfg = config()
    assert cfg.actions() == frozenset({"stop"})
    assert cfg.measurement_devices() == frozenset()
    tags = TagRegistry()
    cfg.declare_tags(tags)
    assert [tags[tags.id_of(f"plc1/{n}")].dtype for n in ("t", "run", "far", "m")] == \
        ["float64", "bool", "int16", "int16"]


def test_plan_follows_the_negotiated_pdu(tmp_path: Path) -> None:
    """A PLC granting a smaller PDU gets a plan that fits it; the gap limit splits far tags."""
    src = build(config(max_gap_bytes=500, pdu_size=960), tmp_path)
    assert [(r.req.area, r.req.start, r.req.size) for r in src.reads] == [
        ("DB", 0, 402), ("M", 20, 2)]
    small = src._plan(240).reads  # 222 bytes per read
    assert [(r.req.area, r.req.start, r.req.size) for r in small] == [
        ("DB", 0, 12), ("DB", 400, 2), ("M", 20, 2)]
    assert src._plan(1920).reads is src.reads  # never more than asked for


class Got:
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        assert batch is not None
        self.batches.append(batch)


async def test_each_error_becomes_its_bad_quality(tmp_path: Path) -> None:
    """Decoded values are scaled; a PLC error answer, a timeout and a lost connection
    each give their Bad quality and NaN for the tags of that read, and the poll says
    when the link is lost."""
    src = build(config(), tmp_path)
    reads = src.reads  # DB1 0..11, DB1 400..401, M 20..21
    assert len(reads) == 3
    db = bytearray(12)
    db[0] = 1
    db[8:12] = bytes.fromhex("42480000")  # 50.0
    got = Got()
    plan = src._plan(480)
    ok, lost = await src._emit_poll(got, plan, [
        db, S7ProtocolError("Read operation failed: Invalid address (0x05)"),
        S7TimeoutError("Receive timeout")])
    b = got.batches[-1]
    assert ok and lost == "Receive timeout"
    assert b.value[:2].tolist() == [101.0, 1.0] and math.isnan(b.value[2])
    assert b.quality.tolist() == [0, 0, Quality.BAD_DEVICE_EXCEPTION, Quality.BAD_TIMEOUT]
    plan = src._plan(480)
    ok, lost = await src._emit_poll(got, plan, [S7ConnectionError("reset")] * 3)
    b = got.batches[-1]
    assert not ok and lost == "reset"
    assert set(b.quality.tolist()) == {Quality.BAD_NOT_CONNECTED} and np.isnan(b.value).all()


async def test_whole_poll_decode_and_its_fallback(tmp_path: Path) -> None:
    """A poll whose reads all answered is decoded in one pass with the same values as
    read by read; a tag whose bytes are no value falls back to per read and is the only
    Bad one."""
    tags = [{"name": "t", "address": "DB1.DBD8", "type": "REAL", "scale": 2.0},
            {"name": "clock", "address": "DB2.DBB0", "type": "DT"},
            {"name": "m", "address": "MW20", "type": "INT"}]
    src = build(config(tags=tags), tmp_path)
    plan = src._plan(480)
    good_dt = bytes([0x24, 0x02, 0x29, 0x13, 0x45, 0x59, 0x12, 0x35])
    bufs = [bytearray(bytes.fromhex("42480000")), bytearray(good_dt), bytearray(b"\xff\xfe")]
    got = Got()
    assert await src._emit_poll(got, plan, list(bufs)) == (True, "")
    assert got.batches[-1].value.tolist() == [100.0, 1709214359.123, -2.0]
    assert not got.batches[-1].quality.any()
    bufs[1][1] = 0x13  # month 13
    assert await src._emit_poll(got, plan, list(bufs)) == (True, "")
    b = got.batches[-1]
    assert b.quality.tolist() == [0, Quality.BAD_DECODE, 0]
    assert b.value[0] == 100.0 and math.isnan(b.value[1]) and b.value[2] == -2.0
    assert [r.failing for r in plan.reads] == ["", "clock: DATE_AND_TIME 2024-13-29 13:45:59 "
                                               "is not a date", ""]
