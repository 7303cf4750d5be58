"""``[[sinks]]`` with ``type = "web"``: where the page listens and who may use it.

Invariants:

* Bound to 127.0.0.1 unless ``listen`` says otherwise. On any address that is not
  loopback the page requires users (HTTP Basic against the OPC-UA user format), and the
  config is refused without them: the page can reset interlocks.
* Users given on loopback are required there too: a configured login is never skipped.
"""

from __future__ import annotations

import msgspec

from edge.components import BuildContext, LiveSink
from edge.config import ConfigStruct, check_secret_name
from edge.errors import ConfigError
from edge.protocols.opcua import security as sec
from edge.web.auth import is_loopback


class WebUser(ConfigStruct, frozen=True):
    name: str
    password_hash: str

    def __post_init__(self) -> None:
        try:
            sec.PasswordHash.parse(self.password_hash)
        except ValueError as exc:
            raise ValueError(f"password_hash {exc}") from None


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must look like HOST:PORT (e.g. 127.0.0.1:8008), not {listen!r}")
    return host.strip("[]"), int(port)


class WebConfig(ConfigStruct, frozen=True):
    """The web status page and its JSON API, a live sink (latest tag values)."""

    name: str = "web"
    # HOST:PORT; port 0 takes any free port (tests).
    listen: str = "127.0.0.1:8008"
    # users: inline hashes, a file of "user:hash" lines, or a secret holding such lines
    # (the format of the OPC-UA server's users: point both at the same file).
    users: list[WebUser] = msgspec.field(default_factory=list)
    users_file: str = ""
    users_secret: str = ""
    login_fail_interval_s: float = 0.5

    def __post_init__(self) -> None:
        host, _ = split_listen(self.listen)
        if not is_loopback(host) and not self.has_users:
            raise ValueError(
                f"listen {self.listen!r} is not a loopback address: users must be given "
                "(users, users_file or users_secret), since the page can reset interlocks")
        if self.users_secret:
            check_secret_name(self.users_secret, "users_secret")
        if self.login_fail_interval_s < 0:
            raise ValueError("login_fail_interval_s must be >= 0")

    @property
    def has_users(self) -> bool:
        return bool(self.users or self.users_file or self.users_secret)

    def build(self, ctx: BuildContext) -> LiveSink:
        from edge.web.server import WebSink

        users = self.load_users(ctx)
        if self.has_users and not users:
            raise ConfigError(f"sink '{self.name}': users: no user defined")
        return WebSink(self, ctx, users)

    def preflight(self) -> list[str]:
        """check-config: the users file's hashes meet the minimum."""
        return sec.users_file_problems(f"sink '{self.name}'", self.users_file)

    def load_users(self, ctx: BuildContext) -> dict[str, sec.PasswordHash]:
        return sec.load_users(f"sink '{self.name}'",
                              [(u.name, u.password_hash) for u in self.users],
                              self.users_file, self.users_secret, ctx.secrets)
