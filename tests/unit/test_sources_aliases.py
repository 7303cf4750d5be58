"""Device spellings: configured aliases (and loose matching) map every spelling to one
canonical device; ambiguous tables are configuration errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.components import BuildContext
from edge.config import loads
from edge.errors import ConfigError
from edge.model import Quarantine, TagRegistry
from edge.runtime.metrics import Metrics
from edge.sources.aliases import Spellings, loose, problems
from edge.sources.mqtt import MqttSource, MqttSourceConfig

CONFIG = """
[[sources]]
type = "mqtt"
name = "plant"
[[sources.subscriptions]]
topic = "plant/+/telemetry"
device = "{1}"
devices = ["smelter_1", "smelter_2"]
ts_field = "ts"
fields = [{ path = "temp", tag = "temp", unit = "degC" }]
"""


def _source(tmp: Path, extra: str) -> MqttSource:
    cfg = loads(CONFIG + extra).sources[0]
    assert isinstance(cfg, MqttSourceConfig)
    tags = TagRegistry()
    cfg.declare_tags(tags)
    return cfg.build(BuildContext("gw", tags, Metrics(), tmp, lambda n: ""))


def test_every_spelling_lands_on_the_canonical_tag(tmp_path: Path) -> None:
    """'Smelter 1' (alias), 'SMELTER-1' and 'Smelter_1' (loose) give smelter_1/temp;
    a spelling nothing maps stays an unknown device, quarantined."""
    src = _source(tmp_path, 'aliases = { "Smelter 1" = "smelter_1", "oven A" = "smelter_2" }\n'
                            'spelling = "loose"\n')
    want = src.subs[0].ids["smelter_1"]
    for name in ("smelter_1", "Smelter 1", "SMELTER-1", "Smelter_1", "SMELTER 1"):
        got = src.handle(f"plant/{name}/telemetry", b'{"ts": 1795255200, "temp": 700.5}', 0)
        assert not isinstance(got, Quarantine), (name, got)
        assert got[0] == "smelter_1" and list(got[1]) == list(want), name
    assert src.handle("plant/OVEN-A/telemetry", b'{"ts": 1795255201, "temp": 1}', 0)[0] == \
        "smelter_2"
    bad = src.handle("plant/smelter_3/telemetry", b'{"ts": 1795255200, "temp": 1.0}', 0)
    assert isinstance(bad, Quarantine) and "unknown device 'smelter_3'" in bad.reason


def test_exact_spelling_takes_only_the_listed_aliases(tmp_path: Path) -> None:
    """Without loose matching, 'SMELTER-1' is not smelter_1 unless it is listed."""
    src = _source(tmp_path, 'aliases = { "SMELTER-1" = "smelter_1" }\n')
    assert src.handle("plant/SMELTER-1/telemetry", b'{"ts": 1795255200, "temp": 1}', 0)[0] \
        == "smelter_1"
    assert isinstance(src.handle("plant/Smelter_1/telemetry",
                                 b'{"ts": 1795255200, "temp": 1}', 0), Quarantine)


@pytest.mark.parametrize(("extra", "message"), [
    ('aliases = { "Smelter #1" = "smelter_9" }\n',
     "'Smelter #1' maps to 'smelter_9', which is not one of the devices"),
    ('aliases = { "smelter_2" = "smelter_1" }\n',
     "'smelter_2' is a device itself and cannot also be a spelling of 'smelter_1'"),
    ('aliases = { "Smelter #2" = "smelter_1" }\nspelling = "loose"\n',
     "'smelter_2' (-> 'smelter_2') and 'Smelter #2' (-> 'smelter_1') are the same name"),
])
def test_conflicting_aliases_are_config_errors(extra: str, message: str) -> None:
    """An alias of an unknown device, a device used as an alias, and spellings loose
    matching would merge across devices are refused at load, naming the source."""
    with pytest.raises(ConfigError) as err:
        loads(CONFIG + extra)
    assert "source 'plant'" in str(err.value) and message in str(err.value)


def test_two_devices_equal_under_loose_matching_are_refused() -> None:
    """'smelter_1' and 'Smelter-1' as two devices cannot be told apart loosely."""
    got = problems(["smelter_1", "Smelter-1"], {}, loose_match=True)
    assert len(got) == 1 and "'smelter_1' (-> 'smelter_1') and 'Smelter-1'" in got[0]
    assert problems(["smelter_1", "Smelter-1"], {}, loose_match=False) == []


def test_loose_key_and_resolution() -> None:
    """The loose key drops case and punctuation; resolution never guesses."""
    assert loose("Smelter #1") == loose("SMELTER-1") == loose("smelter_1") == "smelter1"
    s = Spellings(["smelter_1"], {}, loose_match=True)
    assert s.resolve("Smelter #1") == "smelter_1" and s.resolve("smelter_11") is None


def test_csv_headers_under_other_spellings_map_to_the_configured_column() -> None:
    """A file source's value column found under an alias or, loosely, under any case and
    punctuation; a header that spells one column twice is refused with both names."""
    from edge.sources.file.csv_parse import SamplesParser

    def parser(loose: bool) -> SamplesParser:
        return SamplesParser("ts", ["smelter_1", "smelter_2"], None, "s",
                             aliases=[["Smelter #1"], []], loose=loose)

    for header, loose_match in ((b"ts,Smelter #1,smelter_2", False),
                                (b"ts,SMELTER-2,SMELTER 1", True)):
        p = parser(loose_match)
        assert p.set_header(header) is None, header
        got = p.parse([(2, b"1795255200," + (b"700.5,800.5" if not loose_match
                                             else b"800.5,700.5"))], set())
        assert got.rows[0].values == [700.5, 800.5]
    assert parser(False).set_header(b"ts,SMELTER-1,smelter_2") == "header lacks column " \
        "'smelter_1'"
    assert parser(True).set_header(b"ts,Smelter #1,smelter_1,smelter_2") == (
        "header spells column 'smelter_1' twice: 'Smelter #1' and 'smelter_1'")


def test_file_source_alias_conflicts_are_config_errors() -> None:
    """An alias listed for two columns, or equal to another column, is refused at load."""
    base = """
[[sources]]
type = "file"
name = "hist"
paths = ["/tmp/x"]
mode = "samples"
timestamp_column = "ts"
"""
    with pytest.raises(ConfigError, match="'S1' is listed for two columns"):
        loads(base + 'values = [{ column = "a", tag = "a", aliases = ["S1"] },'
                     ' { column = "b", tag = "b", aliases = ["S1"] }]\n')
    with pytest.raises(ConfigError, match="'b' is a column itself"):
        loads(base + 'values = [{ column = "a", tag = "a", aliases = ["b"] },'
                     ' { column = "b", tag = "b" }]\n')
