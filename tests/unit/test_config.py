"""Config validation: every error names the component and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from edge.config import ConfigStruct, convert, loads, secret_reader
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


class Register(ConfigStruct, frozen=True):
    name: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale == 0:
            raise ValueError("scale must not be 0")


class Device(ConfigStruct, frozen=True):
    name: str
    registers: list[Register] = msgspec.field(default_factory=list)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "etch1", "registers": [{"name": "a"}, {"name": "chamber_temp", "scale": 0.0}]},
         "source 'etch1': register 'chamber_temp': scale must not be 0"),
        ({"name": "etch1", "registers": [{"name": "a", "scal": 1.0}]},
         "source 'etch1': register 'a': unknown key 'scal' (did you mean 'scale'?)"),
        ({"name": "etch1", "registers": [{"name": "a", "scale": "x"}]},
         "source 'etch1': register 'a': scale: expected float, got str"),
        ({"name": "etch1", "registers": [{"scale": 2.0}]},
         "source 'etch1': register #1: missing required key 'name'"),
    ],
)
def test_nested_errors_name_component_and_key(raw: dict[str, object], message: str) -> None:
    """A nested config error names the component, the list item by its name, and the key."""
    with pytest.raises(ConfigError) as exc:
        convert(raw, Device, "source 'etch1'")
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[gateway]\nid = "a b"', "gateway: id must be"),
        ("[journal]\nmax_mb = 0", "journal: max_mb must be > 0"),
        ('[journal]\ndurability = "fsync"', "journal: durability: invalid enum value 'fsync'"),
        ("[journa]\n", "unknown section 'journa'"),
        ("[gateway]\nidd = 1", "gateway: unknown key 'idd'"),
        ('[[sources]]\nname = "x"\ntype = "profinet"', "source 'x': type must be one of"),
        ("[[sources]]\nname = 1", "source #1: type must be one of"),
        ("[gateway\n", "not valid TOML"),
        ('[gateway]\nshutdown_timeout_s = -1', "gateway: shutdown_timeout_s must be > 0"),
    ],
)
def test_top_level_errors(text: str, message: str) -> None:
    """Top-level mistakes (typos, bad values, bad TOML, unknown types) are ConfigErrors."""
    with pytest.raises(ConfigError) as exc:
        loads(text)
    assert message in str(exc.value)


def test_empty_config_has_sane_defaults() -> None:
    """An empty file is a valid config: no sources, no sinks, durable defaults."""
    cfg = loads("")
    assert cfg.sources == [] and cfg.sinks == []
    assert cfg.journal.durability == "process-crash"
    assert cfg.journal_path == Path("/var/lib/edge-gateway/journal.db")


def test_secrets_come_from_credentials_dir_then_environment(tmp_path: Path) -> None:
    """Secrets are read from $CREDENTIALS_DIRECTORY first, then the environment, else a
    ConfigError says how to provide them."""
    (tmp_path / "MES_TOKEN").write_text("from-file\n")
    read = secret_reader({"CREDENTIALS_DIRECTORY": str(tmp_path), "MES_TOKEN": "env",
                          "OTHER": "env-other"})
    assert read("MES_TOKEN") == "from-file"
    assert read("OTHER") == "env-other"
    with pytest.raises(ConfigError, match="secret 'NOPE' not found"):
        read("NOPE")
    (tmp_path / "EMPTY").write_text("\n")
    with pytest.raises(ConfigError, match="secret 'EMPTY' is empty"):
        read("EMPTY")


def test_check_config_exits_2_with_the_message(tmp_path: Path) -> None:
    """`edge-gateway check-config` prints the error with component and key and exits 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[journal]\nmax_mb = -5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "journal: max_mb must be > 0" in proc.stderr


def test_check_config_catches_a_tag_no_source_declares(tmp_path: Path) -> None:
    """A typo in a tag an interlock watches is caught by check-config, not at 3 a.m."""
    text = (ROOT / "config" / "demo.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('tag = "etch1/chamber_temp"', 'tag = "etch1/chamber_tmp"', 1))
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "interlock 'etch1_overtemp': tag 'etch1/chamber_tmp'" in proc.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.toml")
                                        if p.name not in ("plant.toml", "etch_modbus.toml")))
def test_shipped_configs_pass(name: str) -> None:
    """Every gateway config shipped in config/ passes check-config."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(ROOT / "config" / name)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
