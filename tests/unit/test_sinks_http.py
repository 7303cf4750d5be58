"""The shared HTTP answer policy of the durable sinks (no sockets: httpx.MockTransport)."""

from __future__ import annotations

import email.utils
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx
import pytest

from edge.errors import RetryableError
from edge.sinks.http_common import (
    MAX_RETRY_AFTER_S,
    HttpOptions,
    make_client,
    parse_retry_after,
    post,
    send_entries,
    verdict,
)


def test_retry_after_seconds() -> None:
    """Retry-After as delta-seconds is taken as is, clamped to [0, MAX]."""
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("999999") == MAX_RETRY_AFTER_S


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP date gives the seconds until then."""
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_retry_after_garbage() -> None:
    """A missing, empty or unparsable Retry-After is no hint at all."""
    for value in (None, "", "soon", "nan", "Mon, 99 Foo 2020"):
        assert parse_retry_after(value) is None


def test_verdict_table() -> None:
    """2xx delivers; 408, 429, 5xx, 3xx and held 4xx retry; other 4xx reject."""
    hold = frozenset({401, 403, 404})
    assert [verdict(s, hold) for s in (200, 201, 204)] == ["ok"] * 3
    assert [verdict(s, hold) for s in (408, 429, 500, 502, 503, 504, 301, 401, 403, 404)] == [
        "retry"
    ] * 10
    assert [verdict(s, hold) for s in (400, 409, 410, 413, 415, 422)] == ["reject"] * 6
    assert verdict(404, frozenset()) == "reject"


@dataclass(frozen=True)
class Part:
    seq: int
    ok: bool = True


Send = Callable[[Sequence[Part]], Awaitable[httpx.Response]]


def _sender(statuses: dict[tuple[int, ...], httpx.Response]
            ) -> tuple[list[tuple[int, ...]], Send]:
    calls: list[tuple[int, ...]] = []

    async def send(parts: Sequence[Part]) -> httpx.Response:
        key = tuple(p.seq for p in parts)
        calls.append(key)
        if key in statuses:
            return statuses[key]
        if all(p.ok for p in parts):
            return httpx.Response(201)
        return httpx.Response(422, text=f"bad record in {key}")

    return calls, send


async def test_split_rejects_only_bad_entries() -> None:
    """A 422 on a batch of several entries is retried entry by entry; only the refused
    entry becomes a rejection, with the peer's body."""
    calls, send = _sender({})
    parts = [Part(1), Part(2, ok=False), Part(3)]
    rejected = await send_entries(parts, send, peer="p", hold=frozenset())
    assert calls == [(1, 2, 3), (1,), (2,), (3,)]
    assert [r.seq for r in rejected] == [2]
    assert "422" in rejected[0].reason
    assert rejected[0].body == "bad record in (2,)"


async def test_single_entry_refused() -> None:
    """A refused single entry is rejected without a second request."""
    calls, send = _sender({})
    rejected = await send_entries([Part(5, ok=False)], send, peer="p", hold=frozenset())
    assert calls == [(5,)]
    assert [r.seq for r in rejected] == [5]


async def test_non_splitting_4xx_rejects_all() -> None:
    """A 409 is about the whole request: every entry in it is rejected, no split."""
    calls, send = _sender({(1, 2): httpx.Response(409, text="conflict")})
    rejected = await send_entries([Part(1), Part(2)], send, peer="p", hold=frozenset())
    assert calls == [(1, 2)]
    assert [r.seq for r in rejected] == [1, 2]


async def test_retry_during_split_raises() -> None:
    """A 503 while sending entry by entry stops the call with RetryableError."""
    calls, send = _sender({(2,): httpx.Response(503, headers={"Retry-After": "4"})})
    parts = [Part(1), Part(2, ok=False), Part(3)]
    with pytest.raises(RetryableError) as info:
        await send_entries(parts, send, peer="p", hold=frozenset())
    assert info.value.retry_after_s == 4.0
    assert calls == [(1, 2, 3), (1,), (2,)]


async def test_held_status_retries() -> None:
    """A 401 (a held status) retries instead of dead-lettering the batch."""
    _, send = _sender({(1,): httpx.Response(401, text="bad token")})
    with pytest.raises(RetryableError, match="401"):
        await send_entries([Part(1)], send, peer="p", hold=frozenset({401}))


@pytest.mark.parametrize(
    ("exc", "match"),
    [
        (httpx.ConnectError("refused"), "ConnectError"),
        (httpx.ReadTimeout("timed out"), r"ReadTimeout after 1\.5 s \(no answer\)"),
        (httpx.ConnectTimeout("timed out"), r"ConnectTimeout after 0\.5 s \(connect\)"),
        (httpx.RemoteProtocolError("peer closed"), "RemoteProtocolError"),
    ],
)
async def test_transport_errors_are_retryable(exc: Exception, match: str) -> None:
    """Every transport failure becomes RetryableError naming the peer and the cause."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    opts = HttpOptions(timeout_s=1.5, connect_timeout_s=0.5)
    async with make_client(opts, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RetryableError, match=match) as info:
            await post(client, "http://mes.test/x", content=b"{}", peer="MES 'm'")
    assert str(info.value).startswith("MES 'm'")
    assert info.value.retry_after_s is None


def test_options_validation() -> None:
    """Bad connection options name their key."""
    with pytest.raises(ValueError, match=r"^timeout_s"):
        HttpOptions(timeout_s=0)
    with pytest.raises(ValueError, match=r"^hold_statuses"):
        HttpOptions(hold_statuses=[503])
    with pytest.raises(ValueError, match=r"^max_connections"):
        HttpOptions(max_connections=0)
