"""One exception tree, split by what the caller should do.

* ``ConfigError``    - fix the file; the daemon exits with status 2.
* ``RetryableError`` - the runtime retries with backoff (link down, timeout, 5xx).
* ``PermanentError`` - the payload itself is wrong; it goes to the dead letters.

Adapters wrap library exceptions into these at their boundary; nothing else leaks up.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(EdgeError):
    """The configuration is invalid; the message names the component and the key."""


class RetryableError(EdgeError):
    """A transient failure: try the same operation again later.

    ``retry_after_s`` carries a peer's explicit hint (HTTP Retry-After), if any.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(EdgeError):
    """The peer rejected the payload as invalid; retrying cannot help."""

    def __init__(self, message: str, *, body: str = "") -> None:
        super().__init__(message)
        self.body = body
