"""check-config reports every mistake at once: component, key, line, valid values and
"did you mean"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigProblems, load, loads
from edge.errors import ConfigError

MISTAKES = """\
[gateway]
idd = "gw"
log_level = "verbose"

[journal]
durability = "fsync"
max_mb = 0

[[sources]]
type = "file"
name = "cmm1"
paths = ["/tmp/drops"]
mdoe = "cmm"
batch_rows = "many"

[[sources]]
type = "modbs"
name = "etch1"

[intrelocks]
name = "x"
"""


def expected(path: Path) -> list[str]:
    return [
        f"{path}:20: unknown section 'intrelocks' (did you mean 'interlocks'?)",
        f"{path}:2: gateway: unknown key 'idd' (did you mean 'id'?)",
        f"{path}:3: gateway: log_level: invalid enum value 'verbose' "
        "(valid: 'debug', 'error', 'info', 'warning')",
        f"{path}:6: journal: durability: invalid enum value 'fsync' "
        "(valid: 'power-loss', 'process-crash')",
        f"{path}:7: journal: max_mb must be > 0",
        f"{path}:13: source 'cmm1': unknown key 'mdoe' (did you mean 'mode'?)",
        f"{path}:14: source 'cmm1': batch_rows: expected int, got str",
        f"{path}:17: source 'etch1': type must be one of file, modbus, mqtt, opcua (got 'modbs') "
        "(did you mean 'modbus'?)",
    ]


def test_load_reports_every_mistake_with_its_line(tmp_path: Path) -> None:
    """load() raises one ConfigError listing every mistake, each with file:line where the
    line is certain, the enum's valid values and "did you mean" for a misspelt key."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(MISTAKES)
    with pytest.raises(ConfigProblems) as exc:
        load(cfg)
    got = exc.value.problems
    assert [g.split(" (known:")[0] for g in got] == expected(cfg)
    assert str(exc.value) == "\n".join(got)
    assert isinstance(exc.value, ConfigError)


def test_check_config_prints_every_mistake_one_per_line(tmp_path: Path) -> None:
    """`check-config` exits 2 and prints each mistake on its own line."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text(MISTAKES)
    proc = subprocess.run([sys.executable, "-m", "edge", "check-config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == len(expected(cfg)), proc.stderr
    for want, line in zip(expected(cfg), lines, strict=True):
        assert line.startswith(f"edge-gateway: configuration error: {want}"), line


def test_a_struct_check_on_a_default_is_not_reported() -> None:
    """When a bad key is set aside, a check that would judge its default stays silent:
    an invalid mode is reported, not "values is for mode 'samples'"."""
    with pytest.raises(ConfigProblems) as exc:
        loads('[[sources]]\ntype = "file"\nname = "f"\npaths = ["/x"]\nmode = "sample"\n'
              'values = [{ column = "a", tag = "a" }]\n')
    assert exc.value.problems == [
        "source 'f': mode: invalid enum value 'sample' (valid: 'cmm', 'samples')"]


def test_nested_misspelt_key_gets_did_you_mean() -> None:
    """A misspelt key inside a list item is named with its item and a suggestion."""
    with pytest.raises(ConfigProblems) as exc:
        loads('[[sources]]\ntype = "file"\nname = "f"\npaths = ["/x"]\nmode = "samples"\n'
              'values = [{ colum = "a", tag = "a" }]\n')
    assert exc.value.problems == [
        "source 'f': value #1: unknown key 'colum' (did you mean 'column'?)"]


def test_no_line_when_the_key_is_ambiguous(tmp_path: Path) -> None:
    """A line is given only when certain: inline tables have no header to anchor it."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text('gateway = { id = "a b" }\n')
    with pytest.raises(ConfigProblems) as exc:
        load(cfg)
    assert exc.value.problems[0].startswith(f"{cfg}: gateway: id must be")


def test_unknown_array_section_is_located(tmp_path: Path) -> None:
    """A misspelt [[section]] written once is located at its header."""
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[gateway]\nid = "gw"\n\n[[compensaton]]\nname = "cmm1"\n')
    with pytest.raises(ConfigProblems) as exc:
        load(cfg)
    assert exc.value.problems[0].startswith(
        f"{cfg}:4: unknown section 'compensaton' (did you mean 'compensation'?)")
