"""A cheaper copy of each written value for every client that monitors it.

Why (BENCHMARKS.md, "OPC-UA server with many clients"): for every value written to a
monitored tag, asyncua's ``MonitoredItemValues.set_current_datavalue`` keeps a
``copy.deepcopy`` of the DataValue, once per client monitoring it. Profiled: 93 us per
write with one subscriber, three quarters of it in ``deepcopy`` (a DataValue is a tree of
small dataclasses). With 5 clients x 5,000 tags that is most of the server's CPU.

Invariants:

* The copy exists so that a later change to the written object cannot change the value a
  client was (or will be) sent. For a scalar value (number, bool, text, bytes, time,
  null) a copy of the DataValue and of its Variant is exactly that: everything below
  them is immutable. Any other value (arrays, structures) still gets ``deepcopy``.
* Installed once per process (``install``), only while asyncua's class has the method
  this replaces; otherwise asyncua's own copy stays (and the start-up log says so).
"""

from __future__ import annotations

import copy
from datetime import datetime

import structlog
from asyncua import ua
from asyncua.server import monitored_item_service

log = structlog.get_logger("edge.opcua")

_SCALARS = (bool, int, float, str, bytes, datetime, type(None))
_installed = False


def _set_current_datavalue(self: monitored_item_service.MonitoredItemValues,
                           cur_val: ua.DataValue) -> None:
    self.old_dvalue = self.current_dvalue
    variant = cur_val.Value
    if variant is None or (not variant.is_array and isinstance(variant.Value, _SCALARS)):
        dv = copy.copy(cur_val)
        if variant is not None:
            dv.Value = copy.copy(variant)
        self.current_dvalue = dv
    else:
        self.current_dvalue = copy.deepcopy(cur_val)


def install() -> bool:
    """Replace asyncua's per-client deep copy (once per process); False if asyncua's
    class is not the one this was written for."""
    global _installed
    if _installed:
        return True
    cls = getattr(monitored_item_service, "MonitoredItemValues", None)
    if cls is None or not callable(getattr(cls, "set_current_datavalue", None)) or not hasattr(
            cls(), "old_dvalue"):
        log.warning("opcua: asyncua's MonitoredItemValues changed; keeping its deep copy")
        return False
    cls.set_current_datavalue = _set_current_datavalue
    _installed = True
    return True
