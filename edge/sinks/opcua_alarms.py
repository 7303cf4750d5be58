"""OPC-UA Alarms & Conditions (Part 9) for the gateway's condition board.

Each condition of the board (``edge.runtime.conditions``) is a condition instance under
``Objects/Conditions`` (node id ``_conditions/<kind>:<name>``): ``ExclusiveLevelAlarmType``
for an interlock with a limit, ``OffNormalAlarmType`` for interlocks on quality, rate or
stale data, SPC charts and motor health. Every change of its state is an event of that
type from the Server object with the standard fields (EventId, SourceNode, Severity,
Message, ConditionName, Retain, EnabledState, ActiveState, AckedState, ConfirmedState,
LatchedState, Comment, ClientUserId, ...) and the lot and wafer in process (``Lot``,
``Wafer``, in the gateway's namespace) where the trip names them.

Invariants:

* The board is the state; this module only mirrors it. Acknowledge (``i=9111``), Confirm
  (``i=9113``) and Reset (``AlarmConditionType`` ``i=18199``) are called with the
  ConditionId as ObjectId, as Part 9 requires servers to accept; each goes to the board
  with the calling session's user (``anonymous`` without login) and the comment, and a
  refusal is the standard status code (BadConditionBranchAlreadyAcked, ...). The EventId
  given must be one this condition sent (BadEventIdUnknown otherwise).
* ConditionRefresh (asyncua's, bound here) replays the last event of every retained
  condition to the subscription that asks, between RefreshStart and RefreshEnd events:
  each trigger uses a new event object, so the replay is each condition's latest state.
* asyncua evaluates a where clause's ``OfType`` as "exactly this type"; Part 4 says "this
  type or a subtype", and alarm clients filter on ``OfType(AcknowledgeableConditionType)``.
  ``install`` replaces asyncua's evaluator (process-wide: the only asyncua server in the
  daemon is this one) with one that follows the subtype chain.
* Board changes arrive by a listener (synchronous, on the server's loop) into a queue
  that one task drains: a slow client never blocks the board. The board is the real one
  (server on the main loop) or ``opcua_crossing.BoardAcrossThreads`` (threaded server):
  an action it cannot answer in time is BadTimeout, one while the daemon stops
  BadShutdown.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common import event_objects
from asyncua.server import monitored_item_service
from asyncua.server.address_space import AddressSpace
from asyncua.server.internal_session import InternalSession

from edge.runtime.conditions import ConditionState
from edge.sinks.opcua_board import Board, answer
from edge.sinks.opcua_insert import insert_nodes
from edge.sinks.opcua_space import HAS_COMPONENT, HAS_PROPERTY, PROPERTY_TYPE, object_item

log = structlog.get_logger("edge.opcua")

_CALLER: ContextVar[InternalSession | None] = ContextVar("opcua_caller", default=None)
_VT = ua.VariantType
_ID = ua.ObjectIds
_TYPE = {"limit": ua.NodeId(_ID.ExclusiveLevelAlarmType),
         "off_normal": ua.NodeId(_ID.OffNormalAlarmType)}
_EVENT = {"limit": event_objects.ExclusiveLevelAlarm, "off_normal": event_objects.OffNormalAlarm}
_TWO_STATE = ua.NodeId(_ID.TwoStateVariableType)
_CONDITION_VARIABLE = ua.NodeId(_ID.ConditionVariableType)
_STATES = (("EnabledState", "Enabled", "Disabled"), ("ActiveState", "Active", "Inactive"),
           ("AckedState", "Acknowledged", "Unacknowledged"),
           ("ConfirmedState", "Confirmed", "Unconfirmed"), ("LatchedState", "Latched",
                                                          "Unlatched"))
EVENT_IDS_KEPT = 64  # per condition: an Acknowledge may name one of its recent events


def user_of(session: InternalSession | None) -> str:
    """The login name of an OPC-UA session's user; "anonymous" without one."""
    user = getattr(session, "user", None)
    name = getattr(user, "name", None)
    return str(name) if name else "anonymous"


def caller() -> str:
    """The user of the session whose service call is running now."""
    return user_of(_CALLER.get())


class _SubtypeWhereClause(monitored_item_service.WhereClauseEvaluator):  # type: ignore[misc]
    """asyncua's evaluator with ``OfType`` meaning "this type or a subtype" (Part 4)."""

    def _eval_el(self, index: int, event: Any) -> Any:
        el = self.elements[index]
        if el.FilterOperator == ua.FilterOperator.OfType:
            return is_subtype(self._aspace, event.EventType,
                              self._eval_op(el.FilterOperands[0], event))
        return super()._eval_el(index, event)


def is_subtype(aspace: AddressSpace, node: ua.NodeId, of: object) -> bool:
    seen = 0
    while node is not None and seen < 32:
        if node == of:
            return True
        data = aspace.get(node)
        if data is None:
            return False
        node = next((r.NodeId for r in data.references
                     if r.ReferenceTypeId == ua.NodeId(_ID.HasSubtype) and not r.IsForward),
                    None)
        seen += 1
    return False


def _track_callers(server: Server) -> None:
    """Each external session's Call runs with that session in ``_CALLER``: asyncua hands a
    method callback only the object id and the arguments."""
    iserver = server.iserver
    create = iserver.create_session

    def create_session(*args: Any, **kwargs: Any) -> InternalSession:
        session = create(*args, **kwargs)
        call = session.call

        async def traced(params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
            token = _CALLER.set(session)
            try:
                results: list[ua.CallMethodResult] = await call(params)
                return results
            finally:
                _CALLER.reset(token)

        session.call = traced  # type: ignore[method-assign]
        return session

    iserver.create_session = create_session  # type: ignore[method-assign]


class OpcUaConditions:
    """The board's conditions as OPC-UA condition instances and events (module docstring)."""

    def __init__(self, server: Server, idx: int, board: Board) -> None:
        self.server = server
        self.idx = idx
        self.board = board
        self._queue: asyncio.Queue[ConditionState] = asyncio.Queue()
        self._events: dict[str, deque[bytes]] = {}
        self._by_node: dict[ua.NodeId, str] = {}
        self._unsubscribe = board.subscribe(self._queue.put_nowait)

    def nodeid(self, cid: str, child: str = "") -> ua.NodeId:
        return ua.NodeId(f"_conditions/{cid}" + (f".{child}" if child else ""), self.idx)

    async def install(self) -> None:
        """Before ``server.start``: nodes, methods, ConditionRefresh, the OfType fix."""
        iserver = self.server.iserver
        monitored_item_service.WhereClauseEvaluator = _SubtypeWhereClause  # type: ignore[misc]
        if ua.ObjectIds.RefreshStartEventType not in iserver.subscription_service.standard_events:
            await iserver.setup_condition_methods()
        _track_callers(self.server)
        await self.server.nodes.server.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        folder = ua.NodeId("_conditions", self.idx)
        items = [object_item(folder, "Conditions", self.server.nodes.objects.nodeid, self.idx,
                             folder=True)]
        conditions = self.board.conditions()
        for c in conditions:
            items += self._items(c, folder)
            self._by_node[self.nodeid(c.id)] = c.id
        await insert_nodes(iserver.aspace, items)
        for method, handler in ((_ID.AcknowledgeableConditionType_Acknowledge, self._ack),
                                (_ID.AcknowledgeableConditionType_Confirm, self._confirm),
                                (_ID.AlarmConditionType_Reset, self._reset)):
            iserver.isession.add_method_callback(ua.NodeId(method), handler)
        for c in conditions:
            await self._apply(c)

    def close(self) -> None:
        self._unsubscribe()

    async def run(self) -> None:
        while True:
            state = await self._queue.get()
            try:
                await self._apply(state)
            except Exception as exc:  # a mirroring bug must not take the server down
                log.error("opcua condition not published", condition=state.id,
                          error=repr(exc))

    # ------------------------------------------------------------------ methods

    def _condition(self, parent: ua.NodeId) -> str | None:
        return self._by_node.get(parent)

    def _check(self, parent: ua.NodeId, args: tuple[Any, ...]) -> tuple[str, str] | ua.StatusCode:
        cid = self._condition(parent)
        if cid is None:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        if len(args) < 2:
            return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing)
        event_id, comment = args[0], args[1]
        event_id = getattr(event_id, "Value", event_id)
        comment = getattr(comment, "Value", comment)
        if not isinstance(event_id, bytes):
            return ua.StatusCode(ua.StatusCodes.BadTypeMismatch)
        if event_id not in self._events.get(cid, ()):
            return ua.StatusCode(ua.StatusCodes.BadEventIdUnknown)
        text = comment.Text if isinstance(comment, ua.LocalizedText) else comment
        return cid, str(text or "")

    async def _ack(self, parent: ua.NodeId, *args: Any) -> ua.StatusCode:
        checked = self._check(parent, args)
        if isinstance(checked, ua.StatusCode):
            return checked
        cid, comment = checked
        return await answer(self.board.acknowledge(cid, origin="opcua", user=caller(),
                                                   comment=comment))

    async def _confirm(self, parent: ua.NodeId, *args: Any) -> ua.StatusCode:
        checked = self._check(parent, args)
        if isinstance(checked, ua.StatusCode):
            return checked
        cid, comment = checked
        return await answer(self.board.confirm(cid, origin="opcua", user=caller(),
                                               comment=comment))

    async def _reset(self, parent: ua.NodeId, *args: Any) -> ua.StatusCode:
        cid = self._condition(parent)
        if cid is None or not cid.startswith("interlock:"):
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown if cid is None
                                 else ua.StatusCodes.BadNotSupported)
        return await answer(self.board.reset(cid, origin="opcua", user=caller()))

    # ------------------------------------------------------------------ mirroring

    async def _apply(self, c: ConditionState) -> None:
        nodeid = self.nodeid(c.id)
        if nodeid not in self._by_node:
            return
        when = _time(c.time_ns)
        write = self.server.write_attribute_value
        for name, true, false in _STATES:
            flag = _state_value(c, name)
            await write(self.nodeid(c.id, name), ua.DataValue(
                ua.Variant(ua.LocalizedText(true if flag else false), _VT.LocalizedText),
                SourceTimestamp=when))
            await write(self.nodeid(c.id, f"{name}.Id"), ua.DataValue(
                ua.Variant(flag, _VT.Boolean), SourceTimestamp=when))
        fields: tuple[tuple[str, object, ua.VariantType], ...] = (
            ("Retain", c.retain, _VT.Boolean), ("Severity", c.severity, _VT.UInt16),
            ("Message", ua.LocalizedText(c.message), _VT.LocalizedText),
            ("Comment", ua.LocalizedText(c.comment), _VT.LocalizedText),
            ("ClientUserId", c.user, _VT.String), ("Time", when, _VT.DateTime))
        for name, value, vt in fields:
            await write(self.nodeid(c.id, name), ua.DataValue(ua.Variant(value, vt),
                                                              SourceTimestamp=when))
        if c.seq == 0 and not c.retain:
            return  # the configured state at start-up: nothing has happened, no event
        event = self._event(c, when)
        self._events.setdefault(c.id, deque(maxlen=EVENT_IDS_KEPT)).append(event.EventId)
        await self.server.iserver.subscription_service.trigger_event(event)

    def _event(self, c: ConditionState, when: datetime) -> Any:
        ev: Any = _EVENT[c.shape]()
        source = self._source(c)
        now = datetime.now(UTC)
        ev.emitting_node = ua.NodeId(_ID.Server)
        ev.EventId = uuid.uuid4().bytes
        ev.SourceNode = source
        ev.SourceName = c.source
        ev.Time = when
        ev.ReceiveTime = now
        ev.Message = ua.LocalizedText(c.message or f"{c.kind} {c.name}")
        ev.Severity = c.severity
        ev.ConditionClassId = ua.NodeId(_ID.ProcessConditionClassType)
        ev.ConditionClassName = ua.LocalizedText("Process")
        ev.ConditionName = c.name
        ev.BranchId = ua.NodeId()
        ev.Retain = c.retain
        ev.Quality = ua.StatusCode(ua.StatusCodes.Good)
        ev.LastSeverity = c.severity
        ev.Comment = ua.LocalizedText(c.comment)
        ev.ClientUserId = c.user
        ev.InputNode = source
        ev.SuppressedOrShelved = False
        for name, true, false in _STATES:
            value = _state_value(c, name)
            setattr(ev, name, ua.LocalizedText(true if value else false))
            if f"{name}/Id" not in ev.data_types:
                ev.add_property(f"{name}/Id", None, _VT.Boolean)
            setattr(ev, f"{name}/Id", value)
        ev.add_property("ActiveState/TransitionTime", _time(c.active_since_ns or c.time_ns),
                        _VT.DateTime)
        ev.add_property("NodeId", self.nodeid(c.id), _VT.NodeId)  # the ConditionId
        ev.add_property("Lot", c.lot, _VT.String)
        ev.add_property("Wafer", c.wafer, _VT.String)
        if c.shape == "limit":
            if c.high is not None:
                ev.HighLimit = c.high
            if c.low is not None:
                ev.LowLimit = c.low
            state = ("High" if c.high is not None else "Low") if c.active else ""
            ev.add_property("LimitState/CurrentState", ua.LocalizedText(state),
                            _VT.LocalizedText)
        else:
            ev.NormalState = source
        return ev

    def _source(self, c: ConditionState) -> ua.NodeId:
        """The tag the condition is about (the motor's health tag), else the Server."""
        nodeid = ua.NodeId(c.source, self.idx)
        return nodeid if nodeid in self.server.iserver.aspace else ua.NodeId(_ID.Server)

    def _items(self, c: ConditionState, folder: ua.NodeId) -> list[ua.AddNodesItem]:
        node = self.nodeid(c.id)
        obj = object_item(node, c.id, folder, self.idx,
                          description=f"{c.kind} condition {c.name} on {c.source}")
        obj.ReferenceTypeId = HAS_COMPONENT
        obj.TypeDefinition = _TYPE[c.shape]
        items = [obj]
        for name, _, false in _STATES:
            items.append(_variable(node, name, ua.LocalizedText(false), _VT.LocalizedText,
                                   _ID.LocalizedText, _TWO_STATE))
            items.append(_variable(self.nodeid(c.id, name), "Id", False, _VT.Boolean,
                                   _ID.Boolean, PROPERTY_TYPE, prop=True))
        for name, value, vt, dtype, tdef, prop in (
            ("ConditionName", c.name, _VT.String, _ID.String, PROPERTY_TYPE, True),
            ("Retain", False, _VT.Boolean, _ID.Boolean, PROPERTY_TYPE, True),
            ("Severity", c.severity, _VT.UInt16, _ID.UInt16, PROPERTY_TYPE, True),
            ("Message", ua.LocalizedText(""), _VT.LocalizedText, _ID.LocalizedText,
             PROPERTY_TYPE, True),
            ("SourceName", c.source, _VT.String, _ID.String, PROPERTY_TYPE, True),
            ("SourceNode", self._source(c), _VT.NodeId, _ID.NodeId, PROPERTY_TYPE, True),
            ("Time", _time(0), _VT.DateTime, _ID.UtcTime, PROPERTY_TYPE, True),
            ("Comment", ua.LocalizedText(""), _VT.LocalizedText, _ID.LocalizedText,
             _CONDITION_VARIABLE, False),
            ("ClientUserId", "", _VT.String, _ID.String, PROPERTY_TYPE, True),
        ):
            items.append(_variable(node, name, value, vt, dtype, tdef, prop=prop))
        return items


def _state_value(c: ConditionState, name: str) -> bool:
    return {"EnabledState": c.enabled, "ActiveState": c.active, "AckedState": c.acked,
            "ConfirmedState": c.confirmed, "LatchedState": c.latched}[name]


def _variable(parent: ua.NodeId, name: str, value: object, vt: ua.VariantType, dtype: int,
              tdef: ua.NodeId, *, prop: bool = False) -> ua.AddNodesItem:
    attrs = ua.VariableAttributes(
        DisplayName=ua.LocalizedText(name), Description=ua.LocalizedText(name),
        DataType=ua.NodeId(dtype), ValueRank=ua.ValueRank.Scalar, Value=ua.Variant(value, vt),
        AccessLevel=ua.AccessLevel.CurrentRead.mask,
        UserAccessLevel=ua.AccessLevel.CurrentRead.mask,
    )
    attrs.SpecifiedAttributes = (
        ua.NodeAttributesMask.DisplayName | ua.NodeAttributesMask.Description
        | ua.NodeAttributesMask.Value | ua.NodeAttributesMask.DataType
        | ua.NodeAttributesMask.ValueRank | ua.NodeAttributesMask.AccessLevel
        | ua.NodeAttributesMask.UserAccessLevel)
    return ua.AddNodesItem(
        ParentNodeId=parent, ReferenceTypeId=HAS_PROPERTY if prop else HAS_COMPONENT,
        RequestedNewNodeId=ua.NodeId(f"{parent.Identifier}.{name}", parent.NamespaceIndex),
        BrowseName=ua.QualifiedName(name, 0), NodeClass=ua.NodeClass.Variable,
        NodeAttributes=attrs, TypeDefinition=tdef)


def _time(ts_ns: int) -> datetime:
    if ts_ns <= 0:
        return datetime(1601, 1, 1, tzinfo=UTC)
    return datetime.fromtimestamp(ts_ns / 1e9, UTC)
