"""Every query of every Grafana dashboard returns data from what the gateway wrote.

One short real run (``grafana_run.gateway_run``: influxd 1.x, mosquitto, ``hw-sim
plant``, ``edge-gateway run`` with all stages and an InfluxDB sink) feeds a real
InfluxDB; then each query of each dashboard in ``grafana/dashboards`` -- template
variable queries, panel targets and annotations -- has its variables filled in the way
Grafana does and is run through ``/query``. A query passes when it returns at least one
series with at least one non-null value.

Grafana itself is not started: the substitution below follows Grafana's InfluxQL rules
for the forms the dashboards use (``$timeFilter``, ``$__interval``, ``${v}``,
``${v:raw}``, ``${v:regex}``; a variable takes its saved ``current`` value when the
query offers it, else the first value, "All" takes every value).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grafana_run import Run, gateway_run, series_of

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
TIME_FILTER = "time >= now() - 1h and time <= now()"
INTERVAL = "5s"
SETTLE_S = 150.0  # the run ends once every query has data (~90 s: a shift report needs
# a whole one-minute shift), or after this long


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.where}"


def panel_queries(name: str, dash: dict[str, Any]) -> list[Query]:
    out: list[Query] = []
    stack = list(dash.get("panels", []))
    while stack:
        p = stack.pop(0)
        stack += p.get("panels", [])
        for t in p.get("targets", []):
            out.append(Query(name, f"panel {p['title']!r} {t['refId']}", t["query"]))
    for a in dash["annotations"]["list"]:
        if not a.get("builtIn"):
            out.append(Query(name, f"annotation {a['name']!r}", a["target"]["query"]))
    return out


ALL_QUERIES = [
    *(Query(n, f"variable ${v['name']}", v["query"])
      for n, d in dashboards().items() for v in d["templating"]["list"]),
    *(q for n, d in dashboards().items() for q in panel_queries(n, d)),
]


# ---------------------------------------------------------------------- Grafana's rules

_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def interpolate(text: str, values: dict[str, list[str]]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        fmt = m.group(2) or ""
        if name == "timeFilter":
            return TIME_FILTER
        if name in ("__interval", "interval"):
            return INTERVAL
        if name not in values:
            raise AssertionError(f"query uses ${name}, which no variable defines: {text}")
        vals = values[name]
        if fmt == "regex":
            escaped = [regex_escape(v) for v in vals]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        if fmt not in ("", "raw"):
            raise AssertionError(f"format :{fmt} is not handled by this test: {text}")
        return ",".join(vals)

    return _VAR.sub(one, text)


def variable_values(answer: dict[str, Any], regex: str) -> list[str]:
    found: list[str] = []
    for s in series_of(answer):
        col = s["columns"].index("value") if s["columns"] == ["key", "value"] else 0
        found += [str(row[col]) for row in s.get("values", [])]
    if regex:
        pattern = re.compile(regex.strip("/"))
        kept = []
        for v in found:
            m = pattern.search(v)
            if m:
                kept.append(m.group(1) if m.groups() else v)
        found = kept
    return sorted(dict.fromkeys(found))


def resolve_variables(run: Run, dash: dict[str, Any]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for v in dash["templating"]["list"]:
        offered = variable_values(run.query(interpolate(v["query"], values)), v["regex"])
        if not offered:
            values[v["name"]] = []
            continue
        current = v.get("current", {}).get("value")
        if current == "$__all":
            values[v["name"]] = offered
        elif current in offered:
            values[v["name"]] = [current]
        else:
            values[v["name"]] = [offered[0]]
    return values


def has_data(answer: dict[str, Any]) -> bool:
    for s in series_of(answer):
        cols = [i for i, c in enumerate(s["columns"]) if c != "time"]
        if any(row[i] is not None for row in s.get("values", []) for i in cols):
            return True
    return False


def run_all(run: Run) -> dict[str, tuple[str, bool | str]]:
    """Query id -> (the query as sent, True / False / the InfluxQL error)."""
    out: dict[str, tuple[str, bool | str]] = {}
    for name, dash in dashboards().items():
        values = resolve_variables(run, dash)
        for v in dash["templating"]["list"]:
            q = Query(name, f"variable ${v['name']}", v["query"])
            out[q.id] = (interpolate(v["query"], values), bool(values[v["name"]]))
        for q in panel_queries(name, dash):
            if any(not vals for vals in values.values()):
                out[q.id] = (q.text, "a template variable has no value")
                continue
            text = interpolate(q.text, values)
            try:
                out[q.id] = (text, has_data(run.query(text)))
            except AssertionError as exc:
                out[q.id] = (text, str(exc))
    return out


# ---------------------------------------------------------------------- the run


@dataclass
class Outcome:
    results: dict[str, tuple[str, bool | str]]
    measurements: list[str]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    t0 = time.monotonic()
    holder: dict[str, dict[str, tuple[str, bool | str]]] = {}

    def settled(run: Run) -> bool:
        try:
            holder["r"] = run_all(run)
        except OSError:
            return False
        done = all(ok is True for _, ok in holder["r"].values())
        return done or time.monotonic() - t0 > SETTLE_S

    with gateway_run(tmp_path_factory.mktemp("grafana"), settled,
                     timeout=SETTLE_S + 15) as run:
        measurements = [v[0] for s in series_of(run.query("SHOW MEASUREMENTS"))
                        for v in s["values"]]
        yield Outcome(holder["r"], measurements)


@pytest.mark.peer("influxd")
@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.id)
def test_query_returns_data(outcome: Outcome, query: Query) -> None:
    """This dashboard query, with its variables filled in, returns data from the run."""
    sent, ok = outcome.results[query.id]
    assert ok is True, (
        f"{query.id}: {'no data' if ok is False else ok}\n  sent: {sent}\n"
        f"  measurements written: {outcome.measurements}"
    )


def test_dashboards_are_what_build_py_makes() -> None:
    """grafana/dashboards/*.json are up to date with grafana/build.py."""
    rendered = build.render()
    on_disk = {p.name: p.read_text(encoding="utf-8")
               for p in (GRAFANA / "dashboards").glob("*.json")}
    assert on_disk == rendered, "run: python grafana/build.py"


def test_dashboards_use_the_provisioned_datasource() -> None:
    """Every panel, target, variable and annotation names the provisioned datasource uid."""
    text = (GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text()
    m = re.search(r"^\s*uid:\s*(\S+)\s*$", text, re.M)
    assert m is not None
    uid = m.group(1)
    provider = (GRAFANA / "provisioning" / "dashboards" / "edge-gateway.yaml").read_text()
    assert "path: /opt/edge-gateway/grafana/dashboards" in provider
    seen = 0
    for name, dash in dashboards().items():
        assert dash["schemaVersion"] >= 36, name
        for node in _walk(dash):
            ds = node.get("datasource")
            if isinstance(ds, dict) and ds.get("type") == "influxdb":
                assert ds["uid"] == uid, (name, node.get("title") or node.get("name"))
                seen += 1
    assert seen > 50
    all_uids = [d["uid"] for d in dashboards().values()]
    assert len(set(all_uids)) == len(all_uids) == len(build.DASHBOARDS)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)
