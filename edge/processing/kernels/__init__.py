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

One module per stage (compensation, interlock, health, spc); this package re-exports them
so ``from edge.processing import kernels as K; K.spc_scan`` keeps working.
"""

from edge.processing.kernels.compensation import *  # noqa: F403
from edge.processing.kernels.health import *  # noqa: F403
from edge.processing.kernels.interlock import *  # noqa: F403
from edge.processing.kernels.spc import *  # noqa: F403
