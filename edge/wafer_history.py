"""``edge-gateway wafer-history ID``: one wafer's steps through the tools, from the MES.

The MES keeps what the gateway delivered (``WaferStep`` records); this asks it for
``GET <url>/api/v1/wafers/<id>/history`` and prints the steps for an operator. Errors
say what to do: the MES not reachable (and where it was looked for), no such wafer, no
MES sink in the config. Nothing here touches the running daemon or its journal.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from edge.config import Config, secret_reader
from edge.errors import ConfigError

HISTORY_PATH = "/api/v1/wafers/{}/history"


class HistoryError(Exception):
    """The history could not be had; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class MesTarget:
    url: str
    token: str = ""
    verify: bool | str = True  # False, True or a CA file


def target_from_config(cfg: Config, sink: str = "") -> MesTarget:
    """The MES the config delivers to (``sink`` names one when there are several)."""
    from edge.sinks.mes import MesSinkConfig

    mes = [s for s in cfg.sinks if isinstance(s, MesSinkConfig)]
    if sink:
        mes = [s for s in mes if s.name == sink]
    if not mes:
        what = f"no [[sinks]] type = \"mes\" named '{sink}'" if sink else \
            "no [[sinks]] type = \"mes\""
        raise ConfigError(f"{what} in the config: give the MES with --mes URL")
    if len(mes) > 1:
        names = ", ".join(f"'{s.name}'" for s in mes)
        raise ConfigError(f"several MES sinks ({names}): choose one with --sink NAME")
    s = mes[0]
    token = secret_reader()(s.token_secret) if s.token_secret else ""
    verify: bool | str = s.ca_file or s.verify_tls
    return MesTarget(s.url.rstrip("/"), token, verify)


def fetch(target: MesTarget, wafer: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The MES's answer for ``wafer``; HistoryError says why there is none."""
    if not wafer or "/" in wafer:
        raise HistoryError(f"'{wafer}' is not a wafer id (e.g. 4711.03)")
    url = target.url + HISTORY_PATH.format(urllib.parse.quote(wafer, safe=""))
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout_s, verify=target.verify)
    except httpx.HTTPError as exc:
        raise HistoryError(f"the MES at {target.url} is not reachable: "
                           f"{exc or type(exc).__name__}") from None
    if resp.status_code == 404:
        raise HistoryError(f"the MES at {target.url} has no step of wafer '{wafer}' "
                           f"(unknown wafer, or its steps are not delivered yet: "
                           f"`edge-gateway journal stats` shows what waits)")
    if resp.status_code != 200:
        raise HistoryError(f"the MES at {target.url} answered {resp.status_code}: "
                           f"{resp.text[:200]}")
    try:
        doc: dict[str, Any] = resp.json()
        doc["steps"] = list(doc["steps"])
    except (ValueError, KeyError, TypeError) as exc:
        raise HistoryError(f"the MES at {target.url} sent no wafer history: {exc}") from None
    return doc


def _clock(ts_ns: int) -> str:
    t = time.gmtime(ts_ns // 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{ts_ns % 1_000_000_000 // 1_000_000:03d}"


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{float(v):.3f}"


def render(doc: dict[str, Any], where: str = "") -> str:
    """The history as an operator reads it: one block per step, oldest first."""
    steps = doc["steps"]
    src = f" (from the MES at {where})" if where else ""
    out = [f"wafer {doc.get('wafer', '?')}: {len(steps)} step(s){src}"]
    for s in steps:
        start, end = int(s["start_ns"]), int(s["end_ns"])
        recipe = f"  recipe {s['recipe']}" if s.get("recipe") else ""
        out.append("")
        out.append(f"{s['tool']}  lot {s.get('lot') or '-'}{recipe}  {_clock(start)} -> "
                   f"{_clock(end)} UTC ({(end - start) / 1e9:.1f} s)")
        seen = int(s.get("first_seen_ns", start))
        if seen > start:
            out.append(f"  the gateway saw it from {_clock(seen)} on (it was not running "
                       f"before): the telemetry covers that part")
        out.append(f"  {'tag':<28}{'n':>7}{'min':>11}{'mean':>11}{'max':>11}{'last':>11}"
                   f"{'bad':>6}")
        for t in s.get("telemetry", []):
            out.append(f"  {t['tag']:<28}{t['n']:>7}{_num(t['min']):>11}{_num(t['mean']):>11}"
                       f"{_num(t['max']):>11}{_num(t['last']):>11}{t['bad']:>6}")
        trips = s.get("trips", [])
        out.append(f"  interlock trips: {len(trips) or 'none'}")
        for tr in trips:
            sent = "stop sent" if tr.get("action_ok") else "STOP FAILED"
            out.append(f"    {_clock(int(tr['ts_ns']))}  {tr['interlock']}: {tr['tag']} "
                       f"{tr['condition']} value={_num(tr['value'])} limit={_num(tr['limit'])}"
                       f" ({tr['action']}, {sent})")
        quarantines = s.get("quarantines", [])
        out.append(f"  quarantines: {len(quarantines) or 'none'}")
        for q in quarantines:
            out.append(f"    {_clock(int(q['ts_ns']))}  {q['reason']}")
        alarms = s.get("spc_alarms", [])
        out.append(f"  SPC alarms: {len(alarms) or 'none'}")
        for a in alarms:
            out.append(f"    {_clock(int(a['ts_ns']))}  {a['tag']} rule {a['rule']} "
                       f"value={_num(a['value'])}")
        if s.get("dropped"):
            out.append(f"  ({s['dropped']} more events during the step were counted, not kept)")
    return "\n".join(out) + "\n"
