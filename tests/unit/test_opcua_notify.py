"""The per-client copy of a monitored value (edge.sinks.opcua_notify), against asyncua's."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemValues

from edge.sinks import opcua_notify


def test_scalar_values_are_copied_so_later_changes_do_not_reach_the_client() -> None:
    """A client keeps the value as written: changing the written DataValue or its Variant
    afterwards changes nothing it holds, for scalars (copied) and arrays (deep-copied)."""
    assert opcua_notify.install()
    now = datetime.now(UTC)
    for value, vt in ((1.5, ua.VariantType.Double), ("on", ua.VariantType.String),
                      ([1, 2], ua.VariantType.Int32), (None, ua.VariantType.Null)):
        written = ua.DataValue(ua.Variant(copy.deepcopy(value), vt), SourceTimestamp=now)
        held = MonitoredItemValues()
        held.set_current_datavalue(written)
        stored = held.get_current_datavalue()
        assert stored == written and stored is not written
        assert stored is not None and stored.Value is not written.Value
        if isinstance(written.Value.Value, list):
            written.Value.Value.append(3)
        written.Value.Value = "changed"
        written.SourceTimestamp = None
        assert stored.Value.Value == value and stored.SourceTimestamp == now
        held.set_current_datavalue(ua.DataValue(ua.Variant(2.0, ua.VariantType.Double)))
        assert held.get_old_datavalue() is stored
