"""Unit tests of the Sparkplug sink's config and of its bdSeq file (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.components import BuildContext
from edge.config import ConfigError, loads
from edge.model import TagRegistry
from edge.runtime.metrics import Metrics
from edge.sinks.sparkplug import SparkplugSinkConfig

HEAD = '[[sinks]]\ntype = "sparkplug"\nname = "sp"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('edge_node_id = "n"', "sink 'sp': group_id and edge_node_id are given together"),
        ('group_id = "a/b"\nedge_node_id = "n"', "sink 'sp': group_id 'a/b' must be"),
        ('group_id = "g"\nedge_node_id = "n+"', "sink 'sp': edge_node_id 'n+' must be"),
        ('group_id = "g"\nedge_node_id = "n"\nprimary_host_id = "#"',
         "sink 'sp': primary_host_id '#' must be"),
        ('group_id = "g"\nedge_node_id = "n"\nbrokers = []', "sink 'sp': brokers must list"),
        ('group_id = "g"\nedge_node_id = "n"\nbrokers = ["tcp://h:1"]',
         "sink 'sp': brokers: 'tcp://h:1' must look like mqtt://HOST:PORT"),
        ('group_id = "g"\nedge_node_id = "n"\nbrokers = ["mqtts://h:8883"]',
         "sink 'sp': brokers: 'mqtts://h:8883' is mqtts:// but [tls] is not given"),
        ('group_id = "g"\nedge_node_id = "n"\nack_timeout_s = 0',
         "sink 'sp': ack_timeout_s must be > 0"),
    ],
)
def test_config_errors_name_the_sink_and_key(body: str, message: str) -> None:
    """Config mistakes name the sink and the key."""
    with pytest.raises(ConfigError) as info:
        loads(f"{HEAD}{body}\n")
    assert message in str(info.value), str(info.value)


def build(tmp_path: Path) -> SparkplugSinkConfig:
    (cfg,) = loads(f'{HEAD}group_id = "g"\nedge_node_id = "n"\n').sinks
    assert isinstance(cfg, SparkplugSinkConfig)
    return cfg


def test_bdseq_continues_from_the_state_folder(tmp_path: Path) -> None:
    """A restart reads the last bdSeq from <state_dir>/sparkplug/<name>.bdseq."""
    tags = TagRegistry()
    tags.add("etch1", "t")
    ctx = BuildContext("gw", tags, Metrics(), tmp_path, lambda name: "")
    assert build(tmp_path).build(ctx).state.bd_seq is None
    (tmp_path / "sparkplug").mkdir()
    (tmp_path / "sparkplug" / "sp.bdseq").write_text("41\n")
    assert build(tmp_path).build(ctx).state.bd_seq == 41
    (tmp_path / "sparkplug" / "sp.bdseq").write_text("garbage")
    assert build(tmp_path).build(ctx).state.bd_seq is None


def test_devices_become_sparkplug_devices_with_stable_aliases(tmp_path: Path) -> None:
    """Each of our devices is a Sparkplug device; tags get aliases 2.. in id order."""
    tags = TagRegistry()
    tags.add("etch1", "a")
    tags.add("press2", "b")
    tags.add("etch1", "c")
    ctx = BuildContext("gw", tags, Metrics(), tmp_path, lambda name: "")
    sink = build(tmp_path).build(ctx)
    assert sink.state.devices == ("etch1", "press2")
    assert sink.alias == {0: 2, 1: 3, 2: 4}
