"""Builds grafana/dashboards/*.json: `python grafana/build.py` (commit the output).

The dashboards are written as code so that every query is in one reviewable place and
the test (tests/system/test_grafana_dashboards.py) can check that the JSON files are
what this script makes. The queries are InfluxQL (every InfluxDB version answers it)
against the schema of ``edge/sinks/lineproto.py``:

* samples: measurement = the tag's device (``etch1``, ``cmm1``, ``conveyor_belt``),
  field = the tag's name (``chamber_temp``, ``health``, ``ttf_s``), tag ``gateway``;
* records: measurement = the record type (``measurement``, ``interlock_trip``,
  ``spc_violation``, ``quarantine``, ``health_alert``, ``oee_report``,
  ``energy_report``) with the tags of ``RECORD_TAGS``;
* the gateway's own metrics: measurement ``gateway``, one field per figure and per
  sink/source/interlock/SPC chart (``journal_depth_<sink>``, ``link_up_<name>``,
  ``interlock_limit_<interlock>``, ``spc_ucl_<chart>``; ``edge/runtime/status.py``).

Template variables use Grafana's ``${name:raw}`` inside quoted identifiers and string
literals and ``${name:regex}`` inside regular expressions, so names holding ``/`` or
``.`` work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DS: dict[str, str] = {"type": "influxdb", "uid": "edge-influxdb"}
OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39
RECORD_MEASUREMENTS = ("measurement", "cmm_reading", "interlock_trip", "quarantine",
                       "health_alert", "spc_violation", "oee_report", "energy_report",
                       "gateway")
# Devices only: every measurement that is not a record type or the gateway itself.
DEVICE_REGEX = "/^(?!(?:" + "|".join(RECORD_MEASUREMENTS) + ")$).*/"
GW = "\"gateway\" = '${gateway:raw}'"

Json = dict[str, Any]


# ---------------------------------------------------------------------- building blocks


def var(name: str, label: str, query: str, *, regex: str = "", current: str = "",
        multi: bool = False, include_all: bool = False, hide: int = 0) -> Json:
    v: Json = {
        "type": "query", "name": name, "label": label, "datasource": DS,
        "query": query, "definition": query, "regex": regex, "refresh": 2, "sort": 1,
        "multi": multi, "includeAll": include_all, "hide": hide, "options": [],
    }
    if current:
        v["current"] = {"selected": True, "text": current, "value": current}
    elif include_all:
        v["current"] = {"selected": True, "text": "All", "value": "$__all"}
    else:
        v["current"] = {}
    return v


GATEWAY_VAR = var("gateway", "Gateway", 'SHOW TAG VALUES FROM "gateway" WITH KEY = "gateway"')


def target(query: str, ref: str = "A", alias: str = "", fmt: str = "time_series") -> Json:
    t: Json = {"refId": ref, "datasource": DS, "query": query, "rawQuery": True,
               "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def panel(kind: str, title: str, targets: Sequence[Json], *, w: int = 12, h: int = 8,
          unit: str = "", description: str = "", options: Json | None = None,
          custom: Json | None = None, thresholds: Sequence[tuple[float | None, str]] = (),
          overrides: Sequence[Json] = (), extra: Json | None = None) -> Json:
    defaults: Json = {}
    if unit:
        defaults["unit"] = unit
    if custom:
        defaults["custom"] = custom
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"value": v, "color": c} for v, c in thresholds]}
    p: Json = {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "targets": list(targets), "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": options or {},
    }
    if extra:
        p.update(extra)
    return p


def override(name: str, **props: Any) -> Json:
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": k.replace("__", "."), "value": v} for k, v in props.items()]}


def right_axis(name: str, unit: str) -> Json:
    return override(name, custom__axisPlacement="right", unit=unit)


def annotation(name: str, query: str, color: str, text: str, tags: str) -> Json:
    body = {"query": query, "rawQuery": True, "textColumn": text, "tagsColumn": tags,
            "titleColumn": ""}
    return {"name": name, "datasource": DS, "enable": True, "iconColor": color,
            "target": {"refId": "Anno", **body}, **body}


def dashboard(uid: str, title: str, description: str, variables: Sequence[Json],
              panels: Sequence[Json], annotations: Sequence[Json] = ()) -> Json:
    x = y = row_h = 0
    laid: list[Json] = []
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        laid.append({**p, "id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x, row_h = x + w, max(row_h, h)
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
               "name": "Annotations & Alerts", "type": "dashboard"}
    return {
        "uid": uid, "title": title, "description": description,
        "tags": ["edge-gateway"], "editable": True, "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "timezone": "",
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [GATEWAY_VAR, *variables]},
        "annotations": {"list": [builtin, *annotations]},
        "links": [{"type": "dashboards", "tags": ["edge-gateway"], "asDropdown": True,
                   "title": "Edge gateway"}],
        "panels": laid,
    }


def series(field: str, measurement: str, agg: str = "mean", where: str = "",
           alias: str = "", fill: str = "none") -> str:
    as_ = f' AS "{alias}"' if alias else ""
    cond = f" AND {where}" if where else ""
    return (f'SELECT {agg}("{field}"){as_} FROM "{measurement}" WHERE $timeFilter AND {GW}'
            f"{cond} GROUP BY time($__interval) fill({fill})")


# ---------------------------------------------------------------------- dashboards


def thermal() -> Json:
    rec = (f"\"device\" = '${{cmm:raw}}' AND \"feature\" = '${{feature:raw}}' AND {GW}")
    variables = [
        var("cmm", "CMM", 'SHOW TAG VALUES FROM "measurement" WITH KEY = "device"'),
        var("feature", "Feature", 'SHOW TAG VALUES FROM "measurement" WITH KEY = "feature" '
            "WHERE \"device\" = '${cmm:raw}'"),
    ]
    panels = [
        panel("timeseries", "Length: raw against compensated to 20 °C", [
            target('SELECT "raw_mm" AS "raw", "l20_mm" AS "L20", "nominal_mm" AS "nominal" '
                   f'FROM "measurement" WHERE $timeFilter AND {rec}'),
        ], unit="lengthmm", w=24, custom={"drawStyle": "line", "showPoints": "always"},
            description="Every measured part of the feature: the CMM's reading, the length "
                        "at 20 °C after thermal compensation, and the nominal."),
        panel("timeseries", "Deviation from nominal, with air and part temperature", [
            target('SELECT "raw_mm" - "nominal_mm" AS "raw - nominal", '
                   '"l20_mm" - "nominal_mm" AS "L20 - nominal" '
                   f'FROM "measurement" WHERE $timeFilter AND {rec}', "A"),
            target('SELECT "air_temp_c" AS "air", "part_temp_c" AS "part", '
                   '"scale_temp_c" AS "scale" '
                   f'FROM "measurement" WHERE $timeFilter AND {rec}', "B"),
        ], unit="lengthmm", w=24, custom={"showPoints": "always"},
            overrides=[right_axis("air", "celsius"), right_axis("part", "celsius"),
                       right_axis("scale", "celsius")],
            description="The raw deviation follows the part temperature (the part lags "
                        "the air); the compensated one should not."),
        panel("xychart", "Raw deviation against part temperature", [
            target('SELECT "part_temp_c", "raw_mm" - "nominal_mm" AS "raw_dev", '
                   '"l20_mm" - "nominal_mm" AS "l20_dev" '
                   f'FROM "measurement" WHERE $timeFilter AND {rec}', fmt="table"),
        ], w=12, options={"seriesMapping": "auto", "dims": {"x": "part_temp_c"}},
            description="A slope here is the thermal error the compensation removes: "
                        "about CTE x length per kelvin (23.6 µm/m/K for aluminium)."),
        panel("barchart", "Verdicts (guard-banded)", [
            target('SELECT count("l20_mm") AS "parts" FROM "measurement" '
                   f'WHERE $timeFilter AND {rec} GROUP BY "verdict"', fmt="table"),
        ], w=6, options={"xField": "verdict"}),
        panel("timeseries", "Expanded uncertainty U", [
            target(f'SELECT "u_mm" AS "U" FROM "measurement" WHERE $timeFilter AND {rec}'),
        ], unit="lengthmm", w=6, custom={"showPoints": "always"}),
        panel("timeseries", "CMM room: air, scale and part probe (samples)", [
            target('SELECT mean("air_temp_c") AS "air", mean("scale_temp_c") AS "scale", '
                   'mean("part_temp_c") AS "part" FROM "${cmm:raw}" '
                   f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"),
        ], unit="celsius", w=24),
    ]
    return dashboard("edge-thermal", "Edge gateway · Thermal compensation",
                     "CMM lengths raw and compensated to 20 °C against air and part "
                     "temperature.", variables, panels)


def store_and_forward() -> Json:
    sinks = var("sink", "Sink", 'SHOW FIELD KEYS FROM "gateway"',
                regex="/^journal_depth_(.+)$/", multi=True, include_all=True)
    panels = [
        panel("timeseries", "Journal depth per sink (points not yet delivered)", [
            target('SELECT max(/^journal_depth_(${sink:regex})$/) FROM "gateway" '
                   f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"),
        ], unit="short", w=12),
        panel("timeseries", "Oldest unsent age per sink", [
            target('SELECT max(/^oldest_unsent_age_s_(${sink:regex})$/) FROM "gateway" '
                   f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"),
        ], unit="s", w=12, thresholds=[(None, "green"), (60, "orange"), (600, "red")],
            custom={"thresholdsStyle": {"mode": "line"}}),
        panel("state-timeline", "Link state (sinks and sources)", [
            target('SELECT last(/^link_up_/) FROM "gateway" '
                   f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(previous)"),
        ], w=24, h=7, options={"mergeValues": True, "showValue": "never"},
            extra={"fieldConfig": {"defaults": {
                "mappings": [{"type": "value", "options": {
                    "0": {"text": "down", "color": "red"},
                    "1": {"text": "up", "color": "green"}}}],
                "thresholds": {"mode": "absolute", "steps": [
                    {"value": None, "color": "red"}, {"value": 1, "color": "green"}]},
                "color": {"mode": "thresholds"}}, "overrides": []}}),
        panel("timeseries", "Delivered per second per sink", [
            target('SELECT mean(/^delivered_per_s_(${sink:regex})$/) FROM "gateway" '
                   f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"),
        ], unit="short", w=12),
        panel("timeseries", "Journal size and evictions", [
            target('SELECT max("journal_bytes") AS "journal bytes" FROM "gateway" '
                   f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)", "A"),
            target('SELECT max("evicted_samples_total") AS "evicted samples" FROM "gateway" '
                   f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)", "B"),
        ], unit="bytes", w=12, overrides=[right_axis("evicted samples", "short")]),
    ]
    return dashboard("edge-store-forward", "Edge gateway · Store and forward",
                     "The journal's backlog per durable sink and the state of every link.",
                     [sinks], panels)


def interlocks() -> Json:
    variables = [
        var("interlock", "Interlock", 'SHOW FIELD KEYS FROM "gateway"',
            regex="/^interlock_limit_(.+)$/", current="etch1_overtemp"),
        var("device", "Device", "SHOW MEASUREMENTS", regex=DEVICE_REGEX, current="etch1"),
        var("signal", "Signal", 'SHOW FIELD KEYS FROM "${device:raw}"',
            regex="/^(?!.*_quality$).*/", current="chamber_temp"),
    ]
    trips = (f"\"interlock\" = '${{interlock:raw}}' AND {GW}")
    panels = [
        panel("timeseries", "${device} ${signal} and the interlock limit", [
            target(series("${signal:raw}", "${device:raw}", "max", alias="${signal}"), "A"),
            target(series("interlock_limit_${interlock:raw}", "gateway", "last",
                          alias="limit", fill="previous"), "B"),
        ], w=24, h=9, overrides=[override("limit", color={"mode": "fixed", "fixedColor":
                                                           "red"},
                                          custom__lineStyle={"fill": "dash"})],
            description="The maximum per interval, so a short excursion is not averaged "
                        "away; the red dashes are the limit the gateway enforces; trips "
                        "are annotations."),
        panel("state-timeline", "Interlock state", [
            target(series("interlock_tripped_${interlock:raw}", "gateway", "max",
                          alias="${interlock}", fill="previous")),
        ], w=24, h=5, extra={"fieldConfig": {"defaults": {
            "mappings": [{"type": "value", "options": {
                "0": {"text": "ok", "color": "green"},
                "1": {"text": "tripped", "color": "red"}}}],
            "color": {"mode": "thresholds"},
            "thresholds": {"mode": "absolute", "steps": [
                {"value": None, "color": "green"}, {"value": 1, "color": "red"}]}},
            "overrides": []}}),
        panel("table", "Trips", [
            target('SELECT "tag", "condition", "value", "limit", "action", "action_ok", '
                   '"reaction_ns" / 1000000 AS "reaction_ms" FROM "interlock_trip" '
                   f"WHERE $timeFilter AND {trips}", fmt="table"),
        ], w=16, h=8),
        panel("stat", "Trips in range", [
            target('SELECT count("value") AS "trips" FROM "interlock_trip" '
                   f"WHERE $timeFilter AND {trips}"),
        ], w=4, h=8, thresholds=[(None, "green"), (1, "red")]),
        panel("stat", "Stop reaction time (max)", [
            target('SELECT max("reaction_ns") / 1000000 AS "reaction" FROM "interlock_trip" '
                   f"WHERE $timeFilter AND {trips}"),
        ], unit="ms", w=4, h=8, thresholds=[(None, "green"), (5, "red")]),
    ]
    annotations = [annotation(
        "Interlock trips", 'SELECT "value", "condition", "interlock" FROM "interlock_trip" '
        f"WHERE $timeFilter AND {GW}", "red", "condition", "interlock")]
    return dashboard("edge-interlocks", "Edge gateway · Interlocks",
                     "Interlock trips as annotations, the watched signal with its limit, "
                     "trip table with the stop command's outcome.", variables, panels,
                     annotations)


def motors() -> Json:
    variables = [var("motor", "Motor", "SHOW MEASUREMENTS", regex=DEVICE_REGEX,
                     current="conveyor_belt")]
    every = f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"
    panels = [
        panel("timeseries", "Health index of every judged motor (1 = as new)", [
            target(f'SELECT last("health") FROM /.*/ {every}', alias="$m"),
        ], unit="percentunit", w=12, custom={"axisSoftMin": 0, "axisSoftMax": 1},
            thresholds=[(None, "red"), (0.5, "orange"), (0.8, "green")]),
        panel("timeseries", "Time to failure of every judged motor", [
            target(f'SELECT last("ttf_s") FROM /.*/ {every}', alias="$m"),
        ], unit="s", w=12, custom={"scaleDistribution": {"type": "log", "log": 10}}),
        panel("timeseries", "${motor}: current", [
            target(series("current_a", "${motor:raw}", "max", alias="max"), "A"),
            target(series("current_a", "${motor:raw}", "mean", alias="mean"), "B"),
        ], unit="amp", w=12),
        panel("timeseries", "${motor}: health and time to failure", [
            target(series("health", "${motor:raw}", "last", alias="health"), "A"),
            target(series("ttf_s", "${motor:raw}", "last", alias="time to failure"), "B"),
        ], unit="percentunit", w=12, overrides=[right_axis("time to failure", "s")]),
        panel("bargauge", "Lowest health in range", [
            target(f'SELECT min("health") FROM /.*/ WHERE $timeFilter AND {GW}',
                   alias="$m"),
        ], unit="percentunit", w=24, h=6,
            options={"orientation": "vertical", "displayMode": "gradient"},
            thresholds=[(None, "red"), (0.5, "orange"), (0.8, "green")]),
    ]
    return dashboard("edge-motors", "Edge gateway · Motor health",
                     "Health index (0-1) and estimated time to failure per motor, from "
                     "the gateway's health stage, beside the motor current.", variables,
                     panels)


def spc() -> Json:
    variables = [
        var("chart", "Chart", 'SHOW FIELD KEYS FROM "gateway"', regex="/^spc_ucl_(.+)$/",
            current="etch1_temp"),
        var("device", "Device", "SHOW MEASUREMENTS", regex=DEVICE_REGEX, current="etch1"),
        var("signal", "Signal", 'SHOW FIELD KEYS FROM "${device:raw}"',
            regex="/^(?!.*_quality$).*/", current="chamber_temp"),
    ]
    tag = f"\"tag\" = '${{device:raw}}/${{signal:raw}}' AND {GW}"
    limits = " ".join([
        'SELECT last("spc_ucl_${chart:raw}") AS "UCL",',
        'last("spc_center_${chart:raw}") AS "center",',
        'last("spc_lcl_${chart:raw}") AS "LCL" FROM "gateway"',
        f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(previous)",
    ])
    dashed = {"fill": "dash"}
    panels = [
        panel("timeseries", "Control chart: ${device} ${signal} (chart ${chart})", [
            target(series("${signal:raw}", "${device:raw}", "mean", alias="${signal}"), "A"),
            target(limits, "B"),
            target(f'SELECT "value" AS "violation" FROM "spc_violation" WHERE $timeFilter '
                   f"AND {tag}", "C"),
        ], w=24, h=10, overrides=[
            override("UCL", color={"mode": "fixed", "fixedColor": "red"},
                     custom__lineStyle=dashed),
            override("LCL", color={"mode": "fixed", "fixedColor": "red"},
                     custom__lineStyle=dashed),
            override("center", color={"mode": "fixed", "fixedColor": "green"},
                     custom__lineStyle=dashed),
            override("violation", color={"mode": "fixed", "fixedColor": "orange"},
                     custom__drawStyle="points", custom__pointSize=7),
        ], description="Center and 3-sigma limits as the gateway learned them from its "
                       "baseline (the chart's own, not recomputed here); orange points are "
                       "rule violations. Pick the chart and the signal it watches."),
        panel("barchart", "Violations per rule", [
            target(f'SELECT count("value") AS "violations" FROM "spc_violation" '
                   f'WHERE $timeFilter AND {tag} GROUP BY "rule"', fmt="table"),
        ], w=8, options={"xField": "rule"}),
        panel("table", "Violations", [
            target('SELECT "rule", "value", "center", "sigma", "detail" FROM "spc_violation" '
                   f"WHERE $timeFilter AND {tag}", fmt="table"),
        ], w=16),
    ]
    return dashboard("edge-spc", "Edge gateway · SPC", "Control charts with the limits the "
                     "gateway's SPC stage uses, and the rule violations it raised.",
                     variables, panels)


def gateway() -> Json:
    every = f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"
    panels = [
        panel("timeseries", "Ingest rate", [
            target(f'SELECT mean("ingest_samples_per_s") AS "samples/s" FROM "gateway" {every}',
                   "A"),
            target(f'SELECT mean("ingest_records_per_s") AS "records/s" FROM "gateway" {every}',
                   "B"),
        ], unit="short", w=12, overrides=[right_axis("records/s", "short")]),
        panel("timeseries", "Delivered per second per sink", [
            target(f'SELECT mean(/^delivered_per_s_/) FROM "gateway" {every}'),
        ], unit="short", w=12),
        panel("timeseries", "CPU (one core = 100 %)", [
            target(f'SELECT mean("cpu_percent") AS "cpu" FROM "gateway" {every}'),
        ], unit="percent", w=8),
        panel("timeseries", "Memory (RSS)", [
            target(f'SELECT max("rss_mb") AS "rss" FROM "gateway" {every}'),
        ], unit="decmbytes", w=8),
        panel("timeseries", "Journal: points waiting for the commit", [
            target(f'SELECT max("journal_pending_points") AS "pending" FROM "gateway" {every}'),
        ], unit="short", w=8),
        panel("timeseries", "Quarantined input per source", [
            target('SELECT count("reason") FROM "quarantine" '
                   f'WHERE $timeFilter AND {GW} GROUP BY time($__interval), "source" fill(none)',
                   alias="$tag_source"),
        ], unit="short", w=12, custom={"drawStyle": "bars"}),
        panel("table", "Latest quarantined input", [
            target('SELECT "source", "reason", "where", "subject" FROM "quarantine" '
                   f"WHERE $timeFilter AND {GW} ORDER BY time DESC LIMIT 50", fmt="table"),
        ], w=12),
    ]
    return dashboard("edge-gateway", "Edge gateway · Throughput and resources",
                     "The gateway's own metrics (measurement \"gateway\", written every "
                     "10 s) and the input it quarantined.", [], panels)


def oee() -> Json:
    variables = [var("tool", "Tool or line", 'SHOW TAG VALUES FROM "oee_report" WITH KEY = "name"',
                     current="etch1")]
    rep = f"\"name\" = '${{tool:raw}}' AND {GW}"
    every = f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"
    waterfall = ", ".join([
        'last("planned_s") AS "planned"', 'last("no_data_s") AS "no data"',
        'last("down_interlock_s") AS "interlock trips"', 'last("down_fault_s") AS "faults"',
        'last("down_microstop_s") AS "micro-stoppages"', 'last("speed_loss_s") AS "speed loss"',
        'last("scrap_loss_s") AS "scrap"', 'last("rework_loss_s") AS "rework"',
        'last("run_s") - last("speed_loss_s") - last("scrap_loss_s") - last("rework_loss_s") '
        'AS "fully productive"'])
    panels = [
        panel("timeseries", "${tool}: OEE and its factors (rolling window)", [
            target('SELECT last("oee") AS "OEE", last("availability") AS "availability", '
                   'last("performance") AS "performance", last("quality") AS "quality" '
                   f'FROM "${{tool:raw}}" {every}'),
        ], unit="percentunit", w=24, custom={"axisSoftMin": 0, "axisSoftMax": 1},
            description="Published by the gateway every few seconds over its rolling "
                        "window (window_s): the tags <tool>/oee, /availability, "
                        "/performance, /quality, also on OPC-UA."),
        panel("barchart", "${tool}: OEE loss waterfall (last shift)", [
            target(f'SELECT {waterfall} FROM "oee_report" WHERE $timeFilter AND {rep}',
                   fmt="table"),
        ], unit="s", w=12, h=9, options={"orientation": "vertical", "showValue": "always"},
            description="From planned time (shift less planned breaks) down to fully "
                        "productive time: time without data, downtime by cause (interlock "
                        "trip until reset, fault, micro-stoppage), speed loss against the "
                        "ideal cycle, and the ideal time of scrapped and reworked parts."),
        panel("timeseries", "${tool}: downtime by cause per shift", [
            target('SELECT "down_interlock_s" AS "interlock trips", "down_fault_s" AS '
                   '"faults", "down_microstop_s" AS "micro-stoppages", "no_data_s" AS '
                   f'"no data" FROM "oee_report" WHERE $timeFilter AND {rep}'),
        ], unit="s", w=12, h=9, custom={"drawStyle": "bars", "stacking": {"mode": "normal"},
                                        "fillOpacity": 80}),
        panel("table", "${tool}: shifts", [
            target('SELECT "shift", "oee", "availability", "performance", "quality", '
                   '"total_count", "good_count", "scrap_count", "rework_count", "trips", '
                   '"stops", "micro_stoppages" FROM "oee_report" '
                   f"WHERE $timeFilter AND {rep} ORDER BY time DESC", fmt="table"),
        ], w=24),
    ]
    return dashboard("edge-oee", "Edge gateway · OEE",
                     "Availability x performance x quality per tool and line, per shift and "
                     "rolling, and why it was lost.", variables, panels)


def energy() -> Json:
    variables = [var("line", "Line", 'SHOW TAG VALUES FROM "energy_report" WITH KEY = "line"')]
    rep = f"\"line\" = '${{line:raw}}' AND {GW}"
    every = f"WHERE $timeFilter AND {GW} GROUP BY time($__interval) fill(none)"
    panels = [
        panel("timeseries", "Energy over the rolling window, per motor, station and line", [
            target(f'SELECT last("energy_kwh") FROM /.*/ {every}', alias="$m"),
        ], unit="kwatth", w=24),
        panel("barchart", "Energy per motor (last shift)", [
            target('SELECT last("kwh") AS "kWh" FROM "energy_report" WHERE $timeFilter AND '
                   f"\"scope\" = 'motor' AND {rep} GROUP BY \"name\"", fmt="table"),
        ], unit="kwatth", w=12, options={"xField": "name", "showValue": "auto"}),
        panel("timeseries", "${line}: energy per good part, per shift", [
            target('SELECT "kwh_per_good_part" AS "kWh per good part" FROM "energy_report" '
                   f"WHERE $timeFilter AND \"scope\" = 'line' AND {rep}"),
        ], unit="kwatth", w=12, custom={"drawStyle": "bars", "fillOpacity": 80}),
        panel("table", "${line}: shifts, with the time integrated across gaps", [
            target('SELECT "shift", "scope", "name", "kwh", "measured_kwh", "estimated_kwh", '
                   '"gap_s", "bridged_s", "good_parts" FROM "energy_report" '
                   f"WHERE $timeFilter AND {rep} ORDER BY time DESC", fmt="table"),
        ], w=24, description="estimated_kwh covers gaps longer than max_gap_s, at the "
                             "motor's recent mean power (gap_s); bridged_s is time across "
                             "Bad samples, integrated between the good ones around them."),
    ]
    return dashboard("edge-energy", "Edge gateway · Energy",
                     "kWh per motor, station and line from the motors' currents, per "
                     "shift and rolling, and per good part.", variables, panels)


DASHBOARDS = {
    "thermal-compensation.json": thermal,
    "store-and-forward.json": store_and_forward,
    "interlocks.json": interlocks,
    "motor-health.json": motors,
    "spc.json": spc,
    "gateway.json": gateway,
    "oee.json": oee,
    "energy.json": energy,
}


def render() -> dict[str, str]:
    """File name -> JSON text, as written to grafana/dashboards/."""
    return {name: json.dumps(make(), indent=2, ensure_ascii=False) + "\n"
            for name, make in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
