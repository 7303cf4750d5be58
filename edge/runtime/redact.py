"""Keep secrets out of what the gateway logs and stores.

A peer or a proxy may echo our request in an error body (headers included), and that
body reaches the log, the dead letters (and so ``journal export``) and ``status``.

Invariants:

* Every secret read through ``edge.config.secret_reader`` is remembered here for the
  life of the process (as is, JSON-escaped and URL-encoded; a multi-line secret line by
  line too). Values shorter than ``MIN_SECRET_LEN`` are not remembered: replacing every
  "abc" in every line would make the logs unreadable.
* ``redact(text)`` replaces each remembered secret, the credentials of any
  ``Authorization: <scheme> <credentials>``, any ``Bearer``/``Token`` credential of 16
  characters or more, and any ``Basic`` credential (and the password it decodes to) by
  ``REDACTED``. It never raises; a text with nothing to hide comes back equal.
* It is applied where a peer's text enters the gateway (``edge.sinks.http_common``), where
  a dead letter and a sink's last error are stored (``edge.sinks.delivery``), and to every
  rendered log line (``edge.runtime.logging``), the last line of defence.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from urllib.parse import quote

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 4

_AUTH_HEADER = re.compile(
    r"""(?i)(authorization["']?\s*[:=]\s*["']?(?:[A-Za-z][\w-]*\s+)?+)(?!\[REDACTED)([^\s"',;}\]\\]+)"""
)
_SCHEME_TOKEN = re.compile(r"\b(Bearer|Token)(\s+)([A-Za-z0-9\-._~+/]{16,}=*)")
_BASIC = re.compile(r"(?i)\b(Basic)(\s+)([A-Za-z0-9+/]{4,}={0,2})")


class Redactor:
    """The set of secret values, and ``redact`` (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def remember(self, secret: str) -> None:
        forms: set[str] = set()
        for value in {v.strip() for v in (secret, *secret.splitlines())}:
            if len(value) < MIN_SECRET_LEN:
                continue
            forms.update({value, json.dumps(value)[1:-1], quote(value, safe=""),
                          quote(value, safe="/")})
        with self._lock:
            known = set(self._values) | forms
            # longest first, so a secret that contains another is replaced whole
            self._values = tuple(sorted(known, key=len, reverse=True))

    def forget_all(self) -> None:
        with self._lock:
            self._values = ()

    def redact(self, text: str) -> str:
        out = text
        for value in self._values:
            if value in out:
                out = out.replace(value, REDACTED)
        if "asic" in out or "ASIC" in out:  # first: its decoded password goes too
            out = _redact_basic(out)
        if "Bearer" in out or "Token" in out:
            out = _SCHEME_TOKEN.sub(lambda m: m.group(1) + m.group(2) + REDACTED, out)
        if "uthori" in out or "UTHORI" in out:
            out = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, out)
        return out


def _redact_basic(text: str) -> str:
    passwords: list[str] = []

    def one(m: re.Match[str]) -> str:
        try:
            decoded = base64.b64decode(m.group(3), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return m.group(0)
        _, sep, password = decoded.partition(":")
        if not sep:
            return m.group(0)
        if len(password) >= MIN_SECRET_LEN:
            passwords.append(password)
        return m.group(1) + m.group(2) + REDACTED

    out = _BASIC.sub(one, text)
    for password in passwords:
        out = out.replace(password, REDACTED)
    return out


SECRETS = Redactor()
remember = SECRETS.remember
redact = SECRETS.redact
