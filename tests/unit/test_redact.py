"""Secrets are redacted from text a peer sends us and from every rendered log line."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from edge.runtime.redact import REDACTED, Redactor

ROOT = Path(__file__).resolve().parents[2]


def test_remembered_secrets_and_header_forms_are_redacted() -> None:
    """A remembered secret (raw, JSON-escaped, URL-encoded), Bearer/Token credentials,
    an Authorization header of any scheme, and a Basic credential with the password it
    decodes to are all replaced."""
    r = Redactor()
    r.remember('influx"pass/word\n')
    basic = base64.b64encode(b"edge:hunter2-pw").decode()
    text = json.dumps({
        "a": 'influx"pass/word', "b": "q=influx%22pass%2Fword",
        "c": "Bearer abcdefghijklmnop0123", "d": "Token ZXhhbXBsZS10b2tlbi12YWx1ZQ==",
        "e": "Authorization: Digest xyz", "f": f"Basic {basic}", "g": "user said hunter2-pw",
    })
    out = r.redact(text)
    for secret in ('influx\\"pass/word', "influx%22pass%2Fword", "abcdefghijklmnop0123",
                   "ZXhhbXBsZS10b2tlbi12YWx1ZQ==", "xyz", basic, "hunter2-pw"):
        assert secret not in out, (secret, out)
    assert out.count(REDACTED) == 7, out


def test_ordinary_words_are_kept() -> None:
    """Error texts that merely mention tokens or authorization keep their words."""
    r = Redactor()
    r.remember("ab")  # too short to be recognised anywhere
    for text in ("Token required", "token expired", "Authorization header missing",
                 "authorization failed: bad scope", 'Basic realm="influx"', "ab cd",
                 "basic validation failed"):
        assert r.redact(text) == text


def test_rendered_log_lines_are_redacted() -> None:
    """Through the daemon's logging set-up, a secret read with the secret reader is
    redacted from our own events, from a library's stdlib log record and from an
    exception traceback."""
    script = """
import logging, structlog
from edge.config import secret_reader
from edge.runtime import logging as edge_logging
edge_logging.setup("info", "json")
token = secret_reader({"MES_TOKEN": "s3cret-token-value"})("MES_TOKEN")
structlog.get_logger("edge.test").warning("peer said", body="you sent s3cret-token-value")
logging.getLogger("asyncua").warning("header Authorization: Bearer s3cret-token-value")
try:
    raise ValueError("boom s3cret-token-value")
except ValueError:
    structlog.get_logger("edge.test").exception("failed")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr
    assert "s3cret-token-value" not in done.stderr
    assert all(REDACTED in line for line in lines), lines
    assert "ValueError" in lines[2]
