"""The discover command's output: a config the loader accepts whatever the server's
browse names hold."""

from __future__ import annotations

from pathlib import Path

from edge.config import load
from edge.sources.opcua_discover import Discovery, Endpoint, Tag
from edge.sources.opcua_discover_output import render


def test_odd_browse_names_give_unique_valid_tag_names_and_escaped_strings(
        tmp_path: Path) -> None:
    """Slashes, quotes, spaces and non-ASCII in browse paths, two paths that clean up to
    the same name, a unit with a degree sign, a range: the output loads, names are unique
    and the browse path survives as the description."""
    found = Discovery("opc.tcp://plc:4840", [Endpoint("None", "None", ("anonymous",))])
    found.tags = [
        Tag('Line 1/Oven "A"/Temp', 'ns=2;s=Line 1."Oven A".Temp', "float64", "°C", 0.0, 400.0),
        Tag("Line 1/Oven_A/Temp", "ns=2;i=6", "float64"),
        Tag("Line 1/Oven A/Temp", "ns=2;i=7", "float32", history=True),
        Tag("Line 1/Mode", "ns=2;i=8", "text"),
        Tag("Line 1/Recipe", "ns=2;i=9", skipped="a structure"),
    ]
    path = tmp_path / "d.toml"
    path.write_text(render(found, name="oven"))
    (source,) = load(path).sources
    tags = [t for g in source.groups for t in g.tags]  # type: ignore[attr-defined]
    assert [t.name for t in tags] == ["Line_1.Oven_A_.Temp", "Line_1.Oven_A.Temp",
                                      "Line_1.Oven_A.Temp_2", "Line_1.Mode"]
    assert tags[0].unit == "°C" and (tags[0].low, tags[0].high) == (0.0, 400.0)
    assert tags[0].description == 'Line 1/Oven "A"/Temp'
    assert tags[0].node_id == 'ns=2;s=Line 1."Oven A".Temp'
    assert "#   Line 1/Recipe (ns=2;i=9): a structure" in path.read_text()
