"""``edge-gateway discover``'s output: the TOML of one ``[[sources]]`` from a browse
(``edge.sources.opcua_discover``), and the command itself.

Invariant: the output is a config ``check-config`` accepts as it is (names unique and
without ``/``, every string TOML-escaped), with the endpoints and every node left out
(and why) as comments.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from edge.sources.opcua_discover import Discovery, DiscoveryError, discover


def tag_name(path: str) -> str:
    """A tag name from a browse path: dots between the levels, nothing but letters,
    digits, ``_``, ``-`` and ``.``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.replace("/", ".")).strip("_") or "tag"


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string


def render(found: Discovery, *, name: str = "plc", device: str = "") -> str:
    """The TOML of one ``[[sources]]`` (and the gateway's id), with the endpoints and the
    skipped nodes as comments."""
    policy, mode = found.security
    lines = [f"# edge-gateway discover {found.endpoint}",
             "# Endpoints the server offers (security policy / mode: logins):"]
    lines += [f"#   {e.policy} / {e.mode}: {', '.join(e.logins) or '-'}" for e in found.endpoints]
    if policy == "None":
        lines.append("# Security None is for a lab: for production pick a policy above, "
                     "set security_policy and security_mode, and trust the gateway's "
                     "certificate on the server.")
    lines += ["", "[gateway]", f"id = {_s(name + '-gw')}", "", "[[sources]]",
              'type = "opcua"', f"name = {_s(name)}", f"endpoint = {_s(found.endpoint)}"]
    if device:
        lines.append(f"device = {_s(device)}")
    lines += [f"security_policy = {_s(policy)}", f"security_mode = {_s(mode)}",
              "# user = \"gateway\"", "# password_secret = \"PLC_OPCUA_PASSWORD\"", "",
              "[[sources.groups]]", 'name = "all"', 'mode = "subscribe"',
              "publishing_interval_ms = 500", "sampling_interval_ms = 250"]
    used: set[str] = set()
    for tag in found.tags:
        if tag.skipped:
            continue
        base = tag_name(tag.path)
        unique, n = base, 2
        while unique in used:
            unique, n = f"{base}_{n}", n + 1
        used.add(unique)
        lines += ["", "  [[sources.groups.tags]]", f"  name = {_s(unique)}",
                  f"  node_id = {_s(tag.node_id)}", f"  type = {_s(tag.type)}"]
        if tag.unit:
            lines.append(f"  unit = {_s(tag.unit)}")
        if tag.low is not None and tag.high is not None:
            lines += [f"  low = {tag.low!r}", f"  high = {tag.high!r}"]
        history = "; the server keeps its history (backfill)" if tag.history else ""
        lines.append(f"  description = {_s(tag.path)}  # browse path{history}")
    if not used:
        lines += ["", "# No readable variable was found below Objects."]
    skipped = [t for t in found.tags if t.skipped]
    if skipped:
        lines += ["", f"# Not readable by the source ({len(skipped)}):"]
        lines += [f"#   {t.path} ({t.node_id}): {t.skipped}" for t in skipped]
    if found.truncated:
        lines += ["", f"# The browse {found.truncated}: more variables may exist."]
    return "\n".join(lines) + "\n"


def run_cli(endpoint: str, *, name: str, device: str, user: str, password_env: str,
            timeout_s: float, max_tags: int, max_nodes: int, output: str) -> int:
    """``edge-gateway discover``: 0 with the config printed (or written to ``output``),
    1 when the server cannot be browsed, 2 for a mistake on the command line."""
    import logging
    import os
    import sys

    if not endpoint.startswith("opc.tcp://"):
        print("edge-gateway: the endpoint must start with opc.tcp://", file=sys.stderr)
        return 2
    password = ""
    if password_env:
        if password_env not in os.environ:
            print(f"edge-gateway: environment variable {password_env} is not set",
                  file=sys.stderr)
            return 2
        password = os.environ[password_env]
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # its notes are no answer here
    try:
        found = asyncio.run(discover(endpoint, user=user, password=password,
                                     timeout_s=timeout_s, max_tags=max_tags,
                                     max_nodes=max_nodes))
    except DiscoveryError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 1
    text = render(found, name=name, device=device)
    if output:
        Path(output).write_text(text)
        readable = sum(1 for t in found.tags if not t.skipped)
        print(f"wrote {output}: {readable} tags, {len(found.tags) - readable} skipped",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
