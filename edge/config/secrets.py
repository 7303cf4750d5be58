"""Secrets: never in the config file. A config holds the *name* of a secret, read at
start-up from ``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``) or the
environment, and remembered by the redactor so that it is never logged or stored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from edge.errors import ConfigError
from edge.runtime import redact

_SECRET_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def check_secret_name(name: str, key: str = "secret") -> None:
    """ValueError unless ``name`` can only name a file inside the credentials folder."""
    if not _SECRET_NAME.fullmatch(name):
        raise ValueError(
            f"{key} {name!r} is not a secret name: use letters, digits, '_', '-' and '.', "
            "not starting with '.' (it names a file in $CREDENTIALS_DIRECTORY)"
        )


def secret_reader(environ: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """Returns ``read(name)``: ``$CREDENTIALS_DIRECTORY/<name>`` first, then ``$<name>``."""
    env = os.environ if environ is None else environ

    def read(name: str) -> str:
        try:
            check_secret_name(name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        where = f"environment variable {name}"
        value: str | None = None
        if cred_dir and (Path(cred_dir) / name).is_file():
            value = (Path(cred_dir) / name).read_text(encoding="utf-8").strip()
            where = f"credential {Path(cred_dir) / name}"
        else:
            value = env.get(name)
        if value is None:
            raise ConfigError(
                f"secret '{name}' not found: set the environment variable {name} or give "
                f"it as a systemd credential (LoadCredential={name}:...)"
            )
        if not value.strip():
            raise ConfigError(f"secret '{name}' is empty ({where})")
        redact.remember(value)
        return value

    return read
