"""The event-history WhereClause (edge.sinks.opcua_history_filter) on records, no server."""

from __future__ import annotations

from typing import Any

import pytest
from asyncua import ua

from edge.model import OperatorAction, Quarantine, Record, SpcViolation
from edge.sinks.opcua_history_filter import FilterRefused, where

_OP = ua.FilterOperator


def field(name: str) -> ua.SimpleAttributeOperand:
    return ua.SimpleAttributeOperand(
        TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
        BrowsePath=[ua.QualifiedName(name, 0)], AttributeId=ua.AttributeIds.Value)


def lit(value: object, vt: ua.VariantType) -> ua.LiteralOperand:
    return ua.LiteralOperand(Value=ua.Variant(value, vt))


def el(op: int, *operands: Any) -> ua.ContentFilterElement:
    return ua.ContentFilterElement(FilterOperator=op, FilterOperands=list(operands))


def select(*elements: ua.ContentFilterElement) -> list[int]:
    keep = where(ua.ContentFilter(Elements=list(elements)), None,  # type: ignore[arg-type]
                 lambda r: ua.NodeId(ua.ObjectIds.Server))
    assert keep is not None
    return [i for i, r in enumerate(RECORDS) if keep(r, i)]


RECORDS: list[Record] = [
    SpcViolation(ts_ns=1, tag="a", rule="we1", value=1.0, center=0.0, sigma=1.0, alarm=True),
    SpcViolation(ts_ns=2, tag="b", rule="we2", value=1.0, center=0.0, sigma=1.0),
    OperatorAction(ts_ns=3, origin="web", user="bob", action="reset", target="x", ok=False),
    Quarantine(ts_ns=4, source="mqtt", reason="bad"),
]


def test_comparisons_lists_ranges_and_logic_select_the_matching_records() -> None:
    """Severity comparisons (number literals of any integer type), InList on SourceName,
    Between, And/Or/Not, and a field no record has (null): never matched, Not of it true."""
    sev = field("Severity")
    assert select(el(_OP.GreaterThanOrEqual, sev, lit(500, ua.VariantType.Int32))) == [0, 3]
    assert select(el(_OP.InList, field("SourceName"), lit("b", ua.VariantType.String),
                     lit("mqtt", ua.VariantType.String))) == [1, 3]
    assert select(el(_OP.Between, sev, lit(300, ua.VariantType.UInt16),
                     lit(400, ua.VariantType.UInt16))) == [1, 2]
    assert select(el(_OP.Or, ua.ElementOperand(1), ua.ElementOperand(2)),
                  el(_OP.Equals, field("User"), lit("bob", ua.VariantType.String)),
                  el(_OP.Not, ua.ElementOperand(3)),
                  el(_OP.LessThan, sev, lit(700, ua.VariantType.UInt16))) == [0, 2]
    assert select(el(_OP.GreaterThan, field("NoSuchField"), lit(0, ua.VariantType.Int32))) == []
    assert select(el(_OP.IsNull, field("NoSuchField"))) == [0, 1, 2, 3]


@pytest.mark.parametrize(("elements", "code"), [
    ([el(_OP.Like, field("SourceName"), lit("a%", ua.VariantType.String))],
     ua.StatusCodes.BadFilterOperatorUnsupported),
    ([el(_OP.Cast, field("Severity"), lit(ua.NodeId(6), ua.VariantType.NodeId))],
     ua.StatusCodes.BadFilterOperatorUnsupported),
    ([el(_OP.And, ua.ElementOperand(0), ua.ElementOperand(0))],
     ua.StatusCodes.BadEventFilterInvalid),
    ([el(_OP.Not, ua.ElementOperand(5))], ua.StatusCodes.BadEventFilterInvalid),
    ([el(_OP.Equals, field("Severity"))], ua.StatusCodes.BadEventFilterInvalid),
    ([el(_OP.OfType, lit(7, ua.VariantType.Int32))], ua.StatusCodes.BadEventFilterInvalid),
])
def test_a_filter_that_cannot_be_applied_is_refused(elements: list[ua.ContentFilterElement],
                                                    code: int) -> None:
    """Unsupported operators, cycles, dangling element operands, wrong operand counts and
    an OfType without a NodeId are refused with their status, before anything is read."""
    with pytest.raises(FilterRefused) as info:
        where(ua.ContentFilter(Elements=elements), None,  # type: ignore[arg-type]
              lambda r: ua.NodeId(ua.ObjectIds.Server))
    assert info.value.code == code


def test_no_where_clause_is_no_filter() -> None:
    """An empty or absent WhereClause selects every event."""
    assert where(None, None, lambda r: ua.NodeId()) is None  # type: ignore[arg-type]
    assert where(ua.ContentFilter(), None, lambda r: ua.NodeId()) is None  # type: ignore[arg-type]
