"""build_stages wiring from a TOML config, and warm_up."""

from __future__ import annotations

from pathlib import Path

from edge.components import BuildContext
from edge.config import loads
from edge.model import TagRegistry
from edge.processing import build_stages, warm_up
from edge.runtime.metrics import Metrics

CONFIG = """
[[interlocks]]
name = "etch1_overtemp"
tag = "etch1/chamber_temp_c"
high = 188.0
action = {source = "etch1", action = "stop"}

[[compensation]]
name = "cmm1"

[[health]]
name = "line"
motors = [{name = "hbw/belt", current_tag = "hbw/belt/current_a"}]

[[spc]]
name = "chamber"
tag = "etch1/chamber_temp_c"
rules = ["ewma"]
"""


def _secret(name: str) -> str:
    raise KeyError(name)


def test_build_stages_in_order_after_declare_tags(tmp_path: Path) -> None:
    """Stages come out as compensate, interlock, health, spc once their tags are declared."""
    cfg = loads(CONFIG)
    tags = TagRegistry()
    tags.add("etch1", "chamber_temp_c", unit="C")
    tags.add("hbw/belt", "current_a", unit="A")
    for section in ("compensation", "interlocks", "health", "spc"):
        for item in cfg.section(section):
            item.declare_tags(tags)
    assert "cmm1/l20_mm" in tags and "hbw/belt/health" in tags and "hbw/belt/ttf_s" in tags
    ctx = BuildContext("gw", tags, Metrics(), tmp_path, _secret)
    stages = build_stages(cfg, ctx)
    assert [s.name for s in stages] == ["compensate", "interlock", "health", "spc"]
    assert warm_up() < 30.0
