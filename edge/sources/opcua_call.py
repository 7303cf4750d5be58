"""A declared command that calls a method on the PLC (``method`` + ``object``).

Invariants:

* Without ``object`` the call goes to the object the method is a component of (one
  inverse Browse on the session), as a PLC's methods hang under their object.
* The arguments are typed by the method's own ``InputArguments`` (read on the same
  session, before the call): a config's ``1`` reaches an ``Int16`` argument as Int16, not
  as the Int64 a bare client would guess. A count or a type the method does not take is
  refused before anything is sent.
* As for a write: no answer in time or a lost session is a ``RetryableError``, a status
  the server answers with (bad arguments, access denied, the method's own Bad result) a
  ``PermanentError`` naming it; the call is logged in one line with its result.
"""

from __future__ import annotations

import structlog
from asyncua import Client, ua

from edge.components import Command
from edge.errors import PermanentError, RetryableError
from edge.protocols.opcua.client import status_name
from edge.sources.opcua_config import OpcUaCommandConfig
from edge.sources.opcua_connect import LIB_ERRORS, describe, within

log = structlog.get_logger("edge.sources.opcua")

Arg = str | float | bool


async def call_method(source: str, client: Client, spec: OpcUaCommandConfig,
                      command: Command, timeout_s: float) -> None:
    method = ua.NodeId.from_string(spec.method)
    where = f"source '{source}': {command.action}: {spec.method}"
    try:
        obj = (ua.NodeId.from_string(spec.object) if spec.object
               else await within(timeout_s, _owner(client, method)))
        types = await within(timeout_s, _input_types(client, method))
        if len(types) != len(spec.arguments):
            raise ValueError(f"the method takes {len(types)} arguments, the command gives "
                             f"{len(spec.arguments)}")
        args = [_variant(a, t, i) for i, (a, t) in enumerate(zip(spec.arguments, types,
                                                                  strict=True))]
    except ValueError as exc:  # a count or a value the method cannot take
        raise PermanentError(f"{where}: {exc}") from None
    except LIB_ERRORS as exc:
        raise RetryableError(f"{where}: reading its arguments failed: {describe(exc)}") from exc
    request = ua.CallMethodRequest(ObjectId=obj, MethodId=method, InputArguments=args)
    try:
        (result,) = await within(timeout_s, client.uaclient.call([request]))
    except LIB_ERRORS as exc:
        raise RetryableError(f"{where} failed: {describe(exc)}") from exc
    bad = [s for s in [result.StatusCode, *(result.InputArgumentResults or [])]
           if not s.is_good()]
    if bad:
        raise PermanentError(f"{where}: the server refused the call: "
                             f"{', '.join(status_name(s) for s in bad)}")
    out = [v.Value for v in result.OutputArguments or []]
    log.info("opcua method called", source=source, action=command.action,
             method=spec.method, arguments=list(spec.arguments), result=out,
             reason=command.reason)


async def _owner(client: Client, method: ua.NodeId) -> ua.NodeId:
    """The object the method is a component of (what ``object`` defaults to)."""
    refs = await client.get_node(method).get_references(
        refs=ua.ObjectIds.HasComponent, direction=ua.BrowseDirection.Inverse)
    if not refs:
        raise ValueError("the method belongs to no object: set object")
    owner: ua.NodeId = refs[0].NodeId
    return owner


async def _input_types(client: Client, method: ua.NodeId) -> list[ua.VariantType | None]:
    """The VariantType of each input argument (None: a type we pass as we got it)."""
    refs = await client.get_node(method).get_children_descriptions(
        refs=ua.ObjectIds.HasProperty)
    node = next((r.NodeId for r in refs if r.BrowseName.Name == "InputArguments"), None)
    if node is None:
        return []
    arguments = await client.get_node(node).read_value() or []
    out: list[ua.VariantType | None] = []
    for a in arguments:
        dt = a.DataType
        builtin = dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int) \
            and dt.Identifier in ua.VariantType._value2member_map_
        out.append(ua.VariantType(dt.Identifier) if builtin else None)
    return out


def _variant(value: Arg, vt: ua.VariantType | None, index: int) -> ua.Variant:
    if vt is None:
        return ua.Variant(value)
    if vt == ua.VariantType.String:
        if not isinstance(value, str):
            raise ValueError(f"argument {index + 1} must be text for a String")
        return ua.Variant(value, vt)
    if isinstance(value, str):
        raise ValueError(f"argument {index + 1} must be a number for {vt.name}")
    if vt == ua.VariantType.Boolean:
        return ua.Variant(bool(value), vt)
    if vt in (ua.VariantType.Float, ua.VariantType.Double):
        return ua.Variant(float(value), vt)
    if float(value) != int(value):
        raise ValueError(f"argument {index + 1} must be a whole number for {vt.name}")
    return ua.Variant(int(value), vt)
