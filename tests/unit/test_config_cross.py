"""Cross checks between sections: a [[compensation]] stage must have a CMM to judge."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edge.config import loads
from edge.errors import ConfigError
from edge.processing import check_compensation_devices

SOURCES = """
[[sources]]
type = "file"
name = "cmm1"
paths = ["/tmp/cmm"]

[[sources]]
type = "file"
name = "oven"
paths = ["/tmp/oven"]
mode = "samples"
values = [{ column = "t", tag = "t" }]

[[sources]]
type = "modbus"
name = "etch1"
host = "127.0.0.1"
registers = [{ name = "temp", address = 0, type = "float32" }]
"""


def test_compensation_for_a_device_no_source_measures_fails_check_config(
        tmp_path: Path) -> None:
    """A stage for CMM 'cmm2' when only 'cmm1' gives CMM readings fails check-config
    (exit 2) naming the stage, its device key and the devices that have readings."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(SOURCES + '\n[[compensation]]\nname = "line2"\ndevice = "cmm2"\n')
    proc = subprocess.run([sys.executable, "-m", "edge", "check-config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ("compensation 'line2': device 'cmm2': no source gives CMM readings for it "
            "(CMM readings come from: 'cmm1')") in proc.stderr


@pytest.mark.parametrize(("stage", "problem"), [
    ('name = "cmm1"', None),
    ('name = "judge"\ndevice = "cmm1"', None),
    ('name = "oven"', "compensation 'oven': name (the device, as device is not set) 'oven'"),
    ('name = "x"\ndevice = "etch1"', "compensation 'x': device 'etch1'"),
])
def test_compensation_device_must_have_cmm_readings(stage: str, problem: str | None) -> None:
    """Only a file source in mode 'cmm' gives CMM readings: samples and Modbus do not."""
    cfg = loads(SOURCES + f"\n[[compensation]]\n{stage}\n")
    if problem is None:
        check_compensation_devices(cfg)
        return
    with pytest.raises(ConfigError, match="no source gives CMM readings") as exc:
        check_compensation_devices(cfg)
    assert str(exc.value).startswith(problem)


def test_a_source_that_cannot_say_turns_the_check_off() -> None:
    """A source whose devices are not known in advance (None) never causes a false error."""
    cfg = loads(SOURCES + '\n[[compensation]]\nname = "cmm9"\n')
    class Unknowable:  # e.g. a source whose devices come from the data it reads
        name = "later"

        def measurement_devices(self) -> None:
            return None

    check_compensation_devices(replace(cfg, sources=[*cfg.sources, Unknowable()]))


def test_run_refuses_a_compensation_without_cmm_readings(tmp_path: Path) -> None:
    """`run` stops with exit 2 and the same message before it starts anything."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n' + SOURCES
                   + '\n[[compensation]]\nname = "cmm2"\n')
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "compensation 'cmm2': name (the device, as device is not set) 'cmm2'" in proc.stderr
    assert not (tmp_path / "state").exists()
