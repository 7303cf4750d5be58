"""What a file's rows become, by mode: ``cmm`` rows are ``CmmReading`` records plus the
three temperatures as samples; ``samples`` rows are one sample per value column.

Invariants: a row that reached here was accepted whole by its parser; a CMM without a
part probe gives no part temperature sample (not a NaN one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge.model import CmmReading, SampleBatch, TagRegistry
from edge.sources.file.csv_parse import CmmParser, SampleRow, SamplesParser

if TYPE_CHECKING:
    from edge.sources.file.config import FileSourceConfig

CMM_TEMPS = ("air_temp_c", "scale_temp_c", "part_temp_c")


def parser(cfg: FileSourceConfig, tz: dt.tzinfo | None, file: str) -> CmmParser | SamplesParser:
    """A fresh parser for the file named ``file`` (it is the readings' ``where``)."""
    if cfg.mode == "cmm":
        return CmmParser(cfg.columns, tz, cfg.epoch_unit, device=cfg.device_name, where=file)
    return SamplesParser(
        cfg.timestamp_column, [v.column for v in cfg.values], tz,
        cfg.epoch_unit, aliases=[v.aliases for v in cfg.values],
        loose=cfg.spelling == "loose",
    )


def tag_ids(cfg: FileSourceConfig, tags: TagRegistry) -> npt.NDArray[np.int32]:
    """The ids of the tags a row's values go to, in the order of the row's values."""
    dev = cfg.device_name
    if cfg.mode == "cmm":
        return np.array([tags.id_of(f"{dev}/{t}") for t in CMM_TEMPS], np.int32)
    return np.array([tags.id_of(f"{dev}/{v.tag}") for v in cfg.values], np.int32)


def cmm_batch(ids: npt.NDArray[np.int32], rows: Sequence[CmmReading]) -> SampleBatch:
    """The temperatures of CMM readings as samples (``ids`` in ``CMM_TEMPS`` order)."""
    ts = np.fromiter((r.ts_ns for r in rows), np.int64, len(rows))
    vals = np.array([(r.air_temp_c, r.scale_temp_c, r.part_temp_c) for r in rows], np.float64)
    keep = ~np.isnan(vals)  # no part probe: no part temperature sample, not a NaN one
    tag = np.broadcast_to(ids, vals.shape)
    tsm = np.broadcast_to(ts[:, None], vals.shape)
    return SampleBatch(tag[keep], tsm[keep], vals[keep])


def samples_batch(ids: npt.NDArray[np.int32], rows: Sequence[SampleRow]) -> SampleBatch:
    """One sample per value cell of each row."""
    n, k = len(rows), len(ids)
    ts = np.fromiter((r.ts_ns for r in rows), np.int64, n)
    vals = np.array([r.values for r in rows], np.float64).reshape(n * k)
    return SampleBatch(np.tile(ids, n), np.repeat(ts, k), vals)
