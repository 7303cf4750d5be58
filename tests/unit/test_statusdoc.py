"""The status document: typed, strict JSON, and the OPC-UA node names SCADA binds to."""

from __future__ import annotations

import json
import math

import msgspec
import pytest

from edge.runtime.statusdoc import (
    DIAGNOSTICS,
    InterlockStatus,
    JournalDepth,
    SinkStatus,
    SourceStatus,
    StatusDoc,
    build_status,
    diagnostics,
    encode,
)
from edge.runtime.view import render

INTERLOCK_STATE = {
    "state": "tripped", "tag": "etch1/chamber_temp", "last_trip_ns": 5, "last_value": 191.0,
    "limit": 188.0, "trips": 1, "condition": "high", "trip_value": 191.0,
}


def doc(**stage_states: dict[str, dict[str, object]]) -> StatusDoc:
    return build_status(
        gateway="gw", pid=1, uptime_s=2.04, ready=True,
        journal={"mes": JournalDepth(depth_points=3, depth_entries=1, depth_bytes=99,
                                     oldest_unsent_age_s=0.5, acked=7)},
        journal_bytes=4096, journal_pending_points=2,
        links={"sink:mes": True, "source:etch1": False},
        rates={"ingest_samples_per_s": 10.0},
        components={"journal": {"running": True, "restarts": 0, "last_error": ""}},
        sinks={"mes": SinkStatus(link_up=True, delivered_points=3, last_error="", attempt=0)},
        stage_states=stage_states or {"interlocks": {"etch_overtemp": INTERLOCK_STATE}},
        sources={"plc": PLC_DOWN},
    )


PLC_DOWN = SourceStatus(
    link_up=False, bad_reason="connection lost: ConnectionError: transport lost",
    bad_since=1_700_000_000.0, outages=2, last_outage_s=3.25, backfill="partial",
    backfilled_values=57, unfilled_tags=1)


def paths(tree: object, prefix: str = "") -> list[str]:
    """Node paths as the OPC-UA mirror makes them: a mapping is an object, else a variable."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in paths(v, f"{prefix}/{k}" if prefix else k)]
    return [prefix]


def test_diagnostics_node_names_are_pinned() -> None:
    """The Diagnostics node names (a contract with SCADA clients) come from the document's
    field names and stay exactly these."""
    assert DIAGNOSTICS == ("journal", "links", "rates", "sinks", "journal_pending_points",
                           "sources")
    assert set(DIAGNOSTICS) <= set(StatusDoc.__struct_fields__)
    assert paths(diagnostics(doc())) == [
        "journal/mes/depth_points", "journal/mes/depth_entries", "journal/mes/depth_bytes",
        "journal/mes/oldest_unsent_age_s", "journal/mes/acked",
        "links/sink:mes", "links/source:etch1",
        "rates/ingest_samples_per_s",
        "sinks/mes/link_up", "sinks/mes/delivered_points", "sinks/mes/last_error",
        "sinks/mes/attempt",
        "journal_pending_points",
        # added deliberately (issue 16): an OPC-UA source's outage and backfill
        "sources/plc/link_up", "sources/plc/bad_reason", "sources/plc/bad_since",
        "sources/plc/outages", "sources/plc/last_outage_s", "sources/plc/backfill",
        "sources/plc/backfilled_values", "sources/plc/unfilled_tags",
    ]


def test_a_sources_outage_and_backfill_show_in_json_and_the_cli_view() -> None:
    """Why an OPC-UA source's tags are Bad, the last outage's length and what the backfill
    recovered reach ``status --json`` and the text view, under the source's link."""
    back = json.loads(encode(doc()))
    assert back["sources"]["plc"]["bad_reason"].startswith("connection lost")
    assert back["sources"]["plc"]["backfill"] == "partial"
    text = render(doc())
    lines = text.splitlines()
    at = lines.index(next(line for line in lines if line.strip().startswith("source:etch1")))
    assert "source:plc" not in text  # no link of that name: nothing is invented
    assert not lines[at + 1].startswith("    ")  # etch1 reports no source status
    d = build_status(
        gateway="gw", pid=1, uptime_s=1.0, ready=True, journal={}, journal_bytes=0,
        journal_pending_points=0, links={"source:plc": False}, rates={}, sinks={},
        stage_states={}, components={}, sources={"plc": PLC_DOWN})
    shown = render(d)
    assert "tags Bad since" in shown and "connection lost: ConnectionError" in shown
    assert "2 outages, last 3.2 s; backfilled 57 values, 1 tags without history" in shown
    assert all(len(line) <= 80 for line in shown.splitlines())


def test_interlock_node_names_are_pinned() -> None:
    """Interlocks/<name>/<field>: the fields of InterlockStatus, unchanged."""
    assert InterlockStatus.__struct_fields__ == (
        "state", "tag", "last_trip_ns", "last_value", "limit", "trips", "condition",
        "trip_value")


def test_stage_states_are_checked_against_the_type() -> None:
    """A stage state that is not what the document says (the 'armed' a fixture once used)
    is refused, not passed on to SCADA."""
    assert doc().interlocks["etch_overtemp"].state == "tripped"
    with pytest.raises(msgspec.ValidationError, match="state"):
        doc(interlocks={"x": INTERLOCK_STATE | {"state": "armed"}})


def test_json_is_strict_nan_is_null() -> None:
    """NaN and infinities encode as null: ``status --json`` is always valid strict JSON."""
    d = doc(interlocks={"x": INTERLOCK_STATE | {"trip_value": math.nan}},
            spc={"c": {"tag": "t", "center": math.inf, "sigma": math.nan, "ucl": 1.0,
                       "lcl": -1.0, "ewma": math.nan, "points": 0.0}})

    def refuse(name: str) -> None:
        raise AssertionError(f"not strict JSON: {name}")

    back = json.loads(encode({"ok": True, "status": d}), parse_constant=refuse)
    assert back["status"]["interlocks"]["x"]["trip_value"] is None
    assert back["status"]["spc"]["c"]["center"] is None
    assert back["status"]["links"] == {"sink:mes": True, "source:etch1": False}


def test_a_stuck_component_shows_in_the_document() -> None:
    """What the supervisor says a component is stuck in reaches the document (status,
    the view's "components with trouble"), not dropped by the typed conversion."""
    d = build_status(
        gateway="gw", pid=1, uptime_s=1.0, ready=True, journal={}, journal_bytes=0,
        journal_pending_points=0, links={}, rates={}, sinks={}, stage_states={},
        components={"source:cmm1": {"running": True, "restarts": 0, "last_error": "",
                                    "stuck": "open('/drop/fifo.csv') for 31 s"}},
    )
    assert d.components["source:cmm1"].stuck == "open('/drop/fifo.csv') for 31 s"
    assert json.loads(encode(d))["components"]["source:cmm1"]["stuck"].startswith("open(")


def test_numpy_numbers_in_stage_states_are_taken() -> None:
    """A stage state computed by a kernel (numpy scalars) builds a document; the board
    crashed on numpy.float64 every second and no self-metrics reached InfluxDB."""
    import numpy as np

    state = {k: (np.float64(v) if isinstance(v, float) else v)
             for k, v in INTERLOCK_STATE.items()}
    d = doc(interlocks={"etch_overtemp": state})
    assert d.interlocks["etch_overtemp"].limit == 188.0
    assert isinstance(d.interlocks["etch_overtemp"].limit, float)
