"""Our ``DataType`` <-> OPC-UA ``VariantType``, with each type's range.

Invariants:

* One table (``DTYPES``) says which VariantType carries each of our data types. The
  server declares a tag variable's DataType from it and writes every value with that
  variant (asyncua drops a write whose variant type differs from the node's); a client
  reading a node maps the node's variant back through ``data_type_of``.
* The mapping is one-to-one: ``data_type_of(DTYPES[t].variant) == t`` for every type.
  A variant with no data type of ours (String, DateTime, UInt64, ...) is a ValueError
  naming it, never a silent conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from asyncua import ua

from edge.model import DataType


@dataclass(frozen=True, slots=True)
class UaType:
    variant: ua.VariantType
    data_type: ua.NodeId
    low: float
    high: float
    integer: bool


def _ua_type(vt: ua.VariantType, low: float, high: float, integer: bool = True) -> UaType:
    return UaType(vt, ua.NodeId(vt.value), low, high, integer)


_F32 = float(np.finfo(np.float32).max)
_F64 = float(np.finfo(np.float64).max)
DTYPES: dict[DataType, UaType] = {
    "float64": _ua_type(ua.VariantType.Double, -_F64, _F64, integer=False),
    "float32": _ua_type(ua.VariantType.Float, -_F32, _F32, integer=False),
    "int16": _ua_type(ua.VariantType.Int16, -(2**15), 2**15 - 1),
    "uint16": _ua_type(ua.VariantType.UInt16, 0, 2**16 - 1),
    "int32": _ua_type(ua.VariantType.Int32, -(2**31), 2**31 - 1),
    "uint32": _ua_type(ua.VariantType.UInt32, 0, 2**32 - 1),
    "int64": _ua_type(ua.VariantType.Int64, -(2**63), 2**63 - 1),
    "bool": _ua_type(ua.VariantType.Boolean, 0, 1),
}
_DATA_TYPE_OF: dict[ua.VariantType, DataType] = {t.variant: name for name, t in DTYPES.items()}


def data_type_of(variant: ua.VariantType) -> DataType:
    """Our data type for values of ``variant``; ValueError when we have none."""
    try:
        return _DATA_TYPE_OF[variant]
    except KeyError:
        known = ", ".join(vt.name for vt in _DATA_TYPE_OF)
        raise ValueError(
            f"OPC-UA variant type {variant.name} has no data type here (known: {known})"
        ) from None
