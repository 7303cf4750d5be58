"""Fixtures several integration modules share. A module's own fixture of the same name
wins over these."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/ holds peers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import Peer, SparkplugCodec, sparkplug_node_path, start_mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Peer]:
    """mosquitto for the Sparkplug tests (skipped early without the Tahu codec)."""
    sparkplug_node_path()  # skip early when the codec is not installed
    with start_mosquitto(tmp_path) as peer:
        yield peer


@pytest.fixture
def codec() -> Iterator[SparkplugCodec]:
    """The Tahu codec: an independent Sparkplug decoder."""
    c = SparkplugCodec()
    yield c
    c.close()
