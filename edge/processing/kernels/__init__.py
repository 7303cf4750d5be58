"""Numba kernels of the judgement stages: arrays in, arrays (or state) out.

Invariants:

* Every kernel is ``@njit`` with an explicit signature (compiled, or loaded from the
  cache, when its module is imported, never on the first batch), ``cache=True`` (the
  folder comes from ``NUMBA_CACHE_DIR``, set by the app or systemd, never here) and
  ``nogil=True``. No ``fastmath``: NaN and inf must keep their IEEE meaning.
* State is explicit: each stateful kernel takes its state arrays and updates them in
  place, so feeding a series in one batch or in many gives the same result.
* Array arguments are 1-d C-contiguous; the stage modules make them so.
* Each kernel has an obviously-correct twin in ``tests/naive.py``; the unit tests
  compare them on random data with NaN, inf and empty input.

One module per stage (compensation, energy, interlock, health, spc). ``from edge.processing import
kernels as K; K.spc_scan`` keeps working, but a module is imported (its kernels loaded)
only when one of its names is first used: a daemon without compensation never loads
those kernels. ``NAMES`` says which module holds which name (tests/unit/test_kernels_lazy.py
checks it against the modules).
"""

from __future__ import annotations

import gc
import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.processing.kernels.compensation import *  # noqa: F403
    from edge.processing.kernels.energy import *  # noqa: F403
    from edge.processing.kernels.health import *  # noqa: F403
    from edge.processing.kernels.interlock import *  # noqa: F403
    from edge.processing.kernels.spc import *  # noqa: F403

NAMES: dict[str, tuple[str, ...]] = {
    "compensation": ("compensate_l20", "compensate_with_uncertainty", "lag_estimate"),
    "energy": ("N_ENERGY_PARAMS", "N_ENERGY_STATE", "energy_scan"),
    "health": ("N_MOTOR_PARAMS", "N_MOTOR_STATE", "level_track", "motor_scan", "theil_sen"),
    "interlock": ("COND_BAD", "COND_HIGH", "COND_LOW", "COND_NONE", "COND_RATE", "COND_STALE",
                  "N_IL_F", "N_IL_I", "N_IL_PARAMS", "RATE_RING", "interlock_scan"),
    "spc": ("N_SPC_PARAMS", "N_SPC_STATE", "RULE_EWMA", "RULE_WE1", "RULE_WE2", "RULE_WE3",
            "RULE_WE4", "spc_scan"),
}
_MODULE_OF = {name: module for module, names in NAMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    full = f"{__name__}.{module}"
    fresh = full not in sys.modules
    mod = importlib.import_module(full)
    if fresh and _compiled(mod):
        # Compiling (no cache yet) leaves ~130,000 objects in reference cycles; the daemon
        # starts with collection off and freezes what start-up left at READY, so they
        # would stay for good. Loading from the cache leaves none.
        gc.collect()
    value = getattr(mod, name)
    globals()[name] = value
    return value


def _compiled(mod: ModuleType) -> bool:
    """Whether importing ``mod`` compiled a kernel rather than loading it from the cache."""
    return any(getattr(getattr(v, "stats", None), "cache_misses", None)
               for v in vars(mod).values())


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
