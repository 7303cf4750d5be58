"""The WhereClause of an event HistoryRead (Part 4, 7.7 ContentFilter), on the gateway's
records.

Invariants:

* A filter is checked whole before anything is read: an operator outside ``SUPPORTED``
  (Like, Cast, BitwiseAnd/Or, RelatedTo, InView) refuses the read with
  BadFilterOperatorUnsupported; a malformed filter (an element operand that does not
  point forward to an existing element, the wrong number of operands, an operand kind
  we do not know) with BadEventFilterInvalid. Never unfiltered events instead.
* An operand reads the same field value the client would select (``event_field``):
  ``SimpleAttributeOperand`` by its browse name, ``LiteralOperand`` its value,
  ``ElementOperand`` the element's result.
* Comparisons follow Part 4's spirit for what a SCADA sends: numbers compare as numbers
  (UInt16 Severity against an Int32 literal), times as UTC instants, text as text. A
  null operand, or operands that cannot be compared, make the comparison false (and its
  Not true), never an error. And/Or/Not take the operand's truth.
* ``OfType`` is "this type or a subtype" of the record's event type
  (``event_type``), as for live events (``opcua_alarms.is_subtype``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.server.address_space import AddressSpace

from edge.model import Record
from edge.sinks.opcua_alarms import is_subtype
from edge.sinks.opcua_history_events import event_field, event_type

_OP = ua.FilterOperator
_SC = ua.StatusCodes
# operator -> (min operands, max operands)
SUPPORTED: dict[int, tuple[int, int]] = {
    _OP.Equals: (2, 2), _OP.IsNull: (1, 1), _OP.GreaterThan: (2, 2), _OP.LessThan: (2, 2),
    _OP.GreaterThanOrEqual: (2, 2), _OP.LessThanOrEqual: (2, 2), _OP.Not: (1, 1),
    _OP.Between: (3, 3), _OP.InList: (2, 1 << 16), _OP.And: (2, 2), _OP.Or: (2, 2),
    _OP.OfType: (1, 1),
}


class FilterRefused(Exception):
    """The filter cannot be applied: ``code`` is the read's status."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


Predicate = Callable[[Record, int], bool]


def where(content: ua.ContentFilter | None, aspace: AddressSpace,
          source_node: Callable[[Record], ua.NodeId]) -> Predicate | None:
    """The predicate of ``content`` on (record, stored row); None: no filter (every
    event). Raises ``FilterRefused`` for a filter it cannot apply as asked."""
    elements: Sequence[ua.ContentFilterElement] = list(content.Elements or []) \
        if content is not None else []
    if not elements:
        return None
    for i, el in enumerate(elements):
        bounds = SUPPORTED.get(el.FilterOperator)
        if bounds is None:
            raise FilterRefused(_SC.BadFilterOperatorUnsupported,
                                f"filter operator {el.FilterOperator!r} is not supported")
        ops = list(el.FilterOperands or [])
        if not bounds[0] <= len(ops) <= bounds[1]:
            raise FilterRefused(_SC.BadEventFilterInvalid,
                                f"element {i}: {len(ops)} operands for {el.FilterOperator!r}")
        for op in ops:
            if isinstance(op, ua.ElementOperand):
                if not i < op.Index < len(elements):
                    raise FilterRefused(_SC.BadEventFilterInvalid,
                                        f"element {i}: operand points to element {op.Index}")
            elif not isinstance(op, ua.LiteralOperand | ua.SimpleAttributeOperand):
                raise FilterRefused(_SC.BadEventFilterInvalid,
                                    f"element {i}: operand {type(op).__name__} not supported")
        if el.FilterOperator == _OP.OfType:
            target = _literal(ops[0])
            if not isinstance(ops[0], ua.LiteralOperand) or not isinstance(target, ua.NodeId):
                raise FilterRefused(_SC.BadEventFilterInvalid,
                                    f"element {i}: OfType needs a NodeId literal")
    return _Evaluator(elements, aspace, source_node).matches


def _literal(op: Any) -> Any:
    value = getattr(op, "Value", None)
    return value.Value if isinstance(value, ua.Variant) else value


class _Evaluator:
    def __init__(self, elements: Sequence[ua.ContentFilterElement], aspace: AddressSpace,
                 source_node: Callable[[Record], ua.NodeId]) -> None:
        self.elements = elements
        self.aspace = aspace
        self.source_node = source_node

    def matches(self, rec: Record, row: int) -> bool:
        return bool(self._element(0, rec, row))

    def _element(self, i: int, rec: Record, row: int) -> Any:
        el = self.elements[i]
        op = el.FilterOperator
        ops = list(el.FilterOperands)
        if op == _OP.OfType:
            return is_subtype(self.aspace, event_type(rec), _literal(ops[0]))
        if op == _OP.And:
            return bool(self._operand(ops[0], rec, row)) and bool(self._operand(ops[1], rec, row))
        if op == _OP.Or:
            return bool(self._operand(ops[0], rec, row)) or bool(self._operand(ops[1], rec, row))
        if op == _OP.Not:
            return not self._operand(ops[0], rec, row)
        if op == _OP.IsNull:
            return self._operand(ops[0], rec, row) is None
        values = [self._operand(o, rec, row) for o in ops]
        if op == _OP.InList:
            return any(_compare(values[0], v, "eq") for v in values[1:])
        if op == _OP.Between:
            return _compare(values[0], values[1], "ge") and _compare(values[0], values[2], "le")
        how = {_OP.Equals: "eq", _OP.GreaterThan: "gt", _OP.LessThan: "lt",
               _OP.GreaterThanOrEqual: "ge", _OP.LessThanOrEqual: "le"}[op]
        return _compare(values[0], values[1], how)

    def _operand(self, op: Any, rec: Record, row: int) -> Any:
        if isinstance(op, ua.ElementOperand):
            return self._element(op.Index, rec, row)
        if isinstance(op, ua.LiteralOperand):
            return _plain(_literal(op))
        return _plain(event_field(rec, row, op, self.source_node).Value)


def _plain(v: Any) -> Any:
    if isinstance(v, ua.LocalizedText):
        return v.Text
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def _compare(a: Any, b: Any, how: str) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, bool) != isinstance(b, bool) and how != "eq":
        return False
    try:
        if how == "eq":
            return bool(a == b)
        if how == "gt":
            return bool(a > b)
        if how == "lt":
            return bool(a < b)
        if how == "ge":
            return bool(a >= b)
        return bool(a <= b)
    except TypeError:
        return False
