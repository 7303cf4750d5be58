"""Fuzz of whole CSV files through the file source's parse path (no files, no sockets):
no exception escapes, every bad row is quarantined with a reason, every good row kept."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.components import BuildContext
from edge.model import CmmReading, Quarantine, Record, SampleBatch, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.file.checkpoint import FileMark
from edge.sources.file.config import FileSourceConfig
from edge.sources.file.reading import Cursor
from edge.sources.file.source import FileSource

HEADER = ("timestamp,part_id,lot,feature,nominal_mm,tol_mm,measured_mm,"
          "part_temp_c,air_temp_c,scale_temp_c")
FILE = "fuzz.csv"


@dataclass(frozen=True)
class Good:
    part_id: str
    measured_mm: float

    def line(self, second: int) -> bytes:
        return (f"2026-11-21T10:{second // 60 % 60:02d}:{second % 60:02d}+00:00,"
                f"{self.part_id},LOT1,length_120,120.0,0.01,{self.measured_mm!r},"
                f"21.5,21.7,21.1").encode()


# Rows that can never be accepted, whatever surrounds them.
BAD_ROWS = [
    b"2026-11-21T10:00:00+00:00,P1,LOT1,length_120,120.0,0.01",  # column count
    b"2026-11-21T10:00:00+00:00,P1,LOT1,length_120,abc,0.01,120.0,21.5,21.7,21.1",
    b"2026-11-21T10:00:00+00:00,,LOT1,length_120,120.0,0.01,120.0,21.5,21.7,21.1",
    b"2026-11-21T10:00:00+00:00,P1,LOT1,length_120,120.0,0.01,nan,21.5,21.7,21.1",
    b"2026-11-21T10:00:00+00:00,P1,LOT1,length_120,120.0,0.01,inf,21.5,21.7,21.1",
    b"not a timestamp,P1,LOT1,length_120,120.0,0.01,120.0,21.5,21.7,21.1",
    b'"2026-11-21T10:00:00+00:00,P1,LOT1,length_120,120.0,0.01,120.0,21.5,21.7,21.1',
    b"\xff\xfe2026-11-21,P1,LOT1,length_120,120.0,0.01,120.0,21.5,21.7,21.1",
    b"\x00" * 40,
]

_good = st.builds(Good, st.just(""), st.floats(-1e6, 1e6, allow_nan=False))
_item = st.one_of(
    _good,
    st.sampled_from(BAD_ROWS),
    st.just(b"duplicate"),  # the previous good row again
    st.just(b""),  # a blank line
)


def _source() -> FileSource:
    async def no_checkpoint(key: str) -> bytes | None:
        return None

    cfg = FileSourceConfig(name="cmm1", paths=["/nonexistent"], batch_rows=7)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), Path("/nonexistent"),
                                  lambda n: "", checkpoints=no_checkpoint))


class Keep:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def __call__(self, batch: SampleBatch | None, records: Sequence[Record], /, *,
                       checkpoint: tuple[str, bytes] | None = None) -> None:
        self.records.extend(records)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(_item, max_size=40), crlf=st.booleans(), bom=st.booleans(),
       newline_at_end=st.booleans())
def test_fuzz_csv_file_every_good_row_kept_every_bad_row_quarantined(
        items: list[Good | bytes], crlf: bool, bom: bool, newline_at_end: bool) -> None:
    """A CSV file mixing good rows, spoiled rows, duplicates and blank lines (LF or CRLF,
    with or without BOM and final newline): each good row becomes one reading with its
    value, each bad row one Quarantine naming its line with a reason, the offset covers
    the whole file, and nothing raises."""
    eol = b"\r\n" if crlf else b"\n"
    lines = [(b"\xef\xbb\xbf" if bom else b"") + HEADER.encode()]
    good: dict[str, float] = {}
    bad_lines: set[int] = set()
    last: bytes | None = None
    for item in items:
        line_no = len(lines) + 1
        if isinstance(item, Good):
            part = f"P{line_no:05d}"
            last = Good(part, item.measured_mm).line(line_no)
            lines.append(last)
            good[part] = item.measured_mm
        elif item == b"duplicate":
            if last is None:
                continue
            lines.append(last)
            bad_lines.add(line_no)
        else:
            lines.append(item)
            if item:
                bad_lines.add(line_no)
    data = eol.join(lines) + (eol if newline_at_end else b"")

    src, out = _source(), Keep()
    cur = Cursor(FileMark(0, 0, 0, 0, "", 0), src._parser(FILE))
    asyncio.run(src._process(Path(FILE), cur, data, out, final=not newline_at_end))

    readings = [r for r in out.records if isinstance(r, CmmReading)]
    quarantined = [r for r in out.records if isinstance(r, Quarantine)]
    assert {r.part_id: r.measured_mm for r in readings} == good
    assert len(readings) == len(good)
    assert {q.where for q in quarantined} == {f"{FILE}:{n}" for n in bad_lines}
    assert len(quarantined) == len(bad_lines)
    assert all(q.reason and q.source == "cmm1" for q in quarantined)
    assert cur.mark.offset == len(data)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=600), newline_at_end=st.booleans())
def test_fuzz_arbitrary_bytes_after_the_header_never_raise(
        body: bytes, newline_at_end: bool) -> None:
    """Arbitrary bytes after a good header: nothing raises, every non-blank line is
    either a reading or a Quarantine with a reason, and the offset covers the file."""
    data = HEADER.encode() + b"\n" + body.rstrip(b"\n") + (b"\n" if newline_at_end else b"")
    if not newline_at_end and data.endswith(b"\n"):
        return
    src, out = _source(), Keep()
    cur = Cursor(FileMark(0, 0, 0, 0, "", 0), src._parser(FILE))
    asyncio.run(src._process(Path(FILE), cur, data, out, final=not newline_at_end))
    rows = data.split(b"\n")[1:]
    if newline_at_end:
        rows.pop()
    non_blank = [r for r in rows if r.rstrip(b"\r\n").strip()]
    readings = [r for r in out.records if isinstance(r, CmmReading)]
    quarantined = [r for r in out.records if isinstance(r, Quarantine)]
    assert len(readings) + len(quarantined) == len(non_blank)
    assert all(q.reason for q in quarantined)
    assert cur.mark.offset == len(data)
