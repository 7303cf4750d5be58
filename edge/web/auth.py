"""HTTP Basic login for the web page, against the OPC-UA server's users.

Invariants:

* The users are the OPC-UA production profile's: the same ``user:hash`` lines (scrypt or
  PBKDF2), checked by the same ``HashedUserManager`` (a success remembered as an HMAC
  under a per-process key, compared in constant time) and the same per-client
  ``LoginThrottle`` (a client here is its peer address), so a client guessing passwords
  waits longer after each failure and cannot hold the event loop.
* A request whose ``Authorization`` header is absent, malformed or wrong gets 401 with
  a ``WWW-Authenticate`` challenge; nothing else is said about why.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress

from edge.protocols.opcua import security as sec
from edge.protocols.opcua.throttle import LoginThrottle

REALM = "edge-gateway"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a name or any other address is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic ...`` header; None if malformed."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        return None
    return user, password


class BasicAuth:
    """Checks Basic credentials against hashed users, throttled per peer address."""

    def __init__(self, users: dict[str, sec.PasswordHash], *, fail_interval_s: float) -> None:
        self.users = frozenset(users)
        self._manager = sec.HashedUserManager(
            users, None, throttle=LoginThrottle(fail_interval_s))

    def check(self, header: str | None, peer: str) -> str | None:
        """The user name when ``header`` holds a valid login, else None."""
        creds = parse_basic(header) if header else None
        if creds is None:
            return None
        user, password = creds
        return user if self._manager.check(user, password, (peer, "http")) else None
