"""A secret's name can only name a file inside the credentials folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import loads, secret_reader
from edge.errors import ConfigError

BAD = ["../outside", "a/b", ".hidden", "..", "", "x\0y", "a b"]


def test_reader_refuses_names_that_leave_the_credentials_folder(tmp_path: Path) -> None:
    """'../outside' is refused instead of reading a file next to the credentials folder;
    a plain name is read from the folder."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (tmp_path / "outside").write_text("not a secret of ours")
    (creds / "MES_TOKEN").write_text("token-value\n")
    read = secret_reader({"CREDENTIALS_DIRECTORY": str(creds)})
    for name in BAD:
        with pytest.raises(ConfigError, match="is not a secret name"):
            read(name)
    assert read("MES_TOKEN") == "token-value"


@pytest.mark.parametrize("section", [
    '[[sinks]]\ntype = "mes"\nname = "m"\nurl = "http://127.0.0.1:1"\ntoken_secret = "{}"\n',
    '[[sinks]]\ntype = "influx"\nname = "i"\nurl = "http://127.0.0.1:1"\ndatabase = "d"\n'
    'username = "u"\npassword_secret = "{}"\n',
    '[[sinks]]\ntype = "influx"\nname = "i"\nurl = "http://127.0.0.1:1"\napi = "v2"\n'
    'org = "o"\nbucket = "b"\ntoken_secret = "{}"\n',
    '[[sinks]]\ntype = "opcua"\nprofile = "production"\nusers_secret = "{}"\n',
], ids=["mes", "influx-v1", "influx-v2", "opcua"])
def test_config_refuses_bad_secret_names(section: str) -> None:
    """Every config key that names a secret refuses a path at load time, naming the key."""
    with pytest.raises(ConfigError, match=r"_secret '\.\./x' is not a secret name"):
        loads(section.format("../x"))
    loads(section.format("GOOD_NAME-1.v2"))
