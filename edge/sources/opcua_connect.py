"""The OPC-UA client source's asyncua ``Client``: built for one session, closed without
ever waiting long on a dead server, its waits bounded in a way that a stop gets through.

Invariants:

* Every wait of the source on the server goes through ``within`` (``asyncio.timeout``),
  never ``asyncio.wait_for``: on Python 3.11 ``wait_for`` swallows a cancellation that
  meets an answer (gh-86296), and the source then ran on forever after a stop.
* A client is closed once per session, by ``close``: politely (CloseSession within 2 s)
  while the connection stands, else only its socket. Either way none of asyncua's
  background loops (publish, connection supervisor, stale-subscription watchdog, channel
  renewal) outlives the session: asyncua stops them only in a polite close, and a lost
  session's watchdog otherwise ran until the process ended, one more per reconnect.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from asyncua import Client, ua
from asyncua.crypto import security_policies

if TYPE_CHECKING:
    from edge.sources.opcua_config import OpcUaSourceConfig

T = TypeVar("T")

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
# What asyncua raises for a server that is gone, slow or refusing: the session is lost.
LIB_ERRORS = (OSError, TimeoutError, ua.UaError, ConnectionError)
# ... and what its secure-channel handshake raises when the server answers the OPN with
# an error it cannot parse (a server that does not trust our certificate): an assert.
HANDSHAKE_ERRORS = (*LIB_ERRORS, AssertionError)
CLOSE_S = 2.0  # a polite close gets this long, then the socket is closed
# asyncua's background tasks of a connected client, stopped when its session ends
_BACKGROUND = ("_supervisor_task", "_stale_watchdog_task", "_renew_channel_task")


async def within(timeout_s: float, aw: Awaitable[T]) -> T:
    """``await aw`` for at most ``timeout_s`` (TimeoutError), cancellable at any time."""
    async with asyncio.timeout(timeout_s):
        result = await aw
    reraise_cancel()
    return result


def reraise_cancel() -> None:
    """Re-raise a stop that asyncua swallowed: its own ``wait_for`` (socket connect) loses
    a cancellation that meets an answer on Python 3.11; the task still says it is
    cancelling."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def security_hint(cfg: OpcUaSourceConfig, pki: Path) -> str:
    """What to check when a secured session cannot be opened: which certificate the
    server must trust (path and SHA-1 thumbprint, as a server's trust list shows it) and,
    when one is pinned, that it is the server's current certificate."""
    if cfg.security_policy == "None":
        return ""
    cert = Path(cfg.certificate) if cfg.certificate else pki / "cert.der"
    try:
        digest = hashlib.sha1(cert.read_bytes(), usedforsecurity=False).hexdigest()
        thumb = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)).upper()
    except OSError:
        thumb = "unreadable"
    hint = f"; is our certificate {cert} (SHA-1 {thumb}) trusted by the server?"
    if cfg.server_certificate:
        hint += (f" is server_certificate {cfg.server_certificate} the server's current "
                 "certificate?")
    return hint


def describe(exc: BaseException) -> str:
    """``TimeoutError: no answer in time`` rather than an empty message."""
    text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def make_client(cfg: OpcUaSourceConfig, *, password: str, pki: Path,
                      application_uri: str) -> Client:
    """A client for one session, with the configured login and security (a client
    certificate generated into ``pki`` when none is configured). Without a pinned server
    certificate, asyncua asks the endpoint for it: a network round trip."""
    client = Client(cfg.endpoint, timeout=cfg.timeout_s,
                    watchdog_intervall=min(cfg.keepalive_s, cfg.timeout_s))
    client.application_uri = application_uri
    client.name = client.description = f"edge-gateway {cfg.name}"
    client.session_timeout = int(cfg.session_timeout_s * 1000)
    if cfg.user:
        client.set_user(cfg.user)
        client.set_password(password)
    if cfg.security_policy != "None":
        if cfg.certificate:
            cert, key = Path(cfg.certificate), Path(cfg.private_key)
        else:
            cert, key = await client.setup_self_signed_certificate(
                pki / "key.pem", pki / "cert.der")
        await client.set_security(
            POLICIES[cfg.security_policy], str(cert), str(key),
            server_certificate=cfg.server_certificate or None,
            mode=getattr(ua.MessageSecurityMode, cfg.security_mode))
    return client


def _stop_background(client: Client) -> None:
    """Stop asyncua's loops of this client: the publish loop (after a lost connection it
    retries every second, forever, with a traceback), the supervisor, the watchdog and
    the channel renewal (which asyncua cancels only in a polite close)."""
    client.uaclient.request_disconnect()  # the loops' own exit condition
    tasks = [getattr(client.uaclient.session, "_publish_task", None)]
    tasks += [getattr(client, name, None) for name in _BACKGROUND]
    for task in tasks:
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()


async def close(client: Client, polite: bool) -> None:
    """Close politely if the server still answers; never wait long for a dead one.
    Without a standing connection only the socket is closed: asyncua's disconnect would
    log a warning per reconnect attempt while a PLC is down."""
    client.connection_lost_callback = None
    closed = False
    try:
        if polite:
            # Not wait_for: it waits for the cancelled disconnect to finish, and asyncua's
            # can outlive its cancellation (seen with 2,000 items: stopping the source hung).
            closing = asyncio.ensure_future(client.disconnect())
            try:
                await asyncio.wait({closing}, timeout=CLOSE_S)
            finally:
                if not closing.done():
                    closing.cancel()
            closed = not closing.cancelled() and closing.exception() is None
    finally:
        if not closed:
            client.disconnect_socket()
        _stop_background(client)
