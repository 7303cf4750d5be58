"""Shared pieces of the kernel modules: the decorator and the numba types.

Every kernel is ``@njit`` with an explicit signature (compiled, or loaded from the cache,
when its module is imported - never on the first batch), ``cache=True`` (the folder comes
from ``NUMBA_CACHE_DIR``, set by the app or systemd, never here) and ``nogil=True``. No
``fastmath``: NaN and inf must keep their IEEE meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit
from numba.core import types

f8, i8, u1 = types.float64, types.int64, types.uint8
F8, I8, U1 = types.float64[::1], types.int64[::1], types.uint8[::1]

_F = TypeVar("_F", bound=Callable[..., Any])


def kernel(signature: Any) -> Callable[[_F], _F]:
    """``@njit(signature, cache=True, nogil=True)``, typed for mypy."""
    def wrap(fn: _F) -> _F:
        return cast(_F, njit(signature, cache=True, nogil=True)(fn))
    return wrap

__all__ = ["F8", "I8", "U1", "f8", "i8", "kernel", "types", "u1"]
