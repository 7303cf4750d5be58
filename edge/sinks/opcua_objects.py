"""Gateway objects of the OPC-UA server: interlocks (state, last trip, Reset), health, SPC,
measurements, each tool's last wafer (``Wafers/<tool>/LastWafer``, from its ``WaferStep``
records: the digital thread's last step, summary per tag under ``Telemetry``) and the
Diagnostics object. Trips, SPC alarms and health alerts are alarm
conditions (``opcua_alarms``), not events of a type of ours.

Invariants:

* These objects are small (tens of nodes) and are created with the ordinary node API,
  lazily, the first time a status document or a record names them; node ids start with
  ``_`` so they never collide with a tag (``s=<device>/<name>``).
* A mirrored variable keeps the variant type it was created with (numbers are Double,
  flags Boolean, text String); every later write converts to it, because asyncua drops
  a write of another type.
* No value reads Good without being one: a NaN in the document (no sample yet, not
  tripped) and a value the document dropped (None) read BadNoData.
* A last wafer's ``WaferId`` is written after every other variable of its step: a client
  that subscribes to it reads a complete step when it changes.
* One name per thing: an interlock's state is the status document's ``InterlockStatus``
  fields (``trips``, ``last_trip_ns``, ``trip_value``, ...; pinned by test_statusdoc); a
  trip record adds only what the document lacks (``LastAction``, the stop's outcome) and
  asks for the document at once. An SPC chart is one object, ``SPC/<chart name>``, for
  its status and its violations alike.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import structlog
from asyncua import Node, Server, ua

from edge.model import HealthAlert, InterlockTrip, Measurement, SpcViolation, WaferStep
from edge.runtime.statusdoc import StatusDoc, as_tree, diagnostics

log = structlog.get_logger("edge.opcua")

Scalar = bool | int | float | str | datetime
_GOOD = ua.StatusCode(ua.StatusCodes.Good)
_NO_DATA = ua.StatusCode(ua.StatusCodes.BadNoData)


def _ts(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC)


def variant_type_of(value: Scalar) -> ua.VariantType:
    if isinstance(value, bool):
        return ua.VariantType.Boolean
    if isinstance(value, int | float):
        return ua.VariantType.Double
    if isinstance(value, datetime):
        return ua.VariantType.DateTime
    return ua.VariantType.String


def coerce(value: object, vtype: ua.VariantType) -> object:
    """``value`` as the Python type of ``vtype``; ValueError when it cannot be."""
    if vtype == ua.VariantType.Double:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if vtype == ua.VariantType.Boolean:
        return bool(value)
    if vtype == ua.VariantType.UInt32:
        return int(value)  # type: ignore[call-overload]
    if vtype == ua.VariantType.DateTime:
        if not isinstance(value, datetime):
            raise ValueError(f"{value!r} is not a time")
        return value
    return value if isinstance(value, str) else json.dumps(value, default=str)


class Mirror:
    """Objects and variables created on first use under fixed roots, written by path."""

    def __init__(self, server: Server, idx: int) -> None:
        self.server = server
        self.idx = idx
        self._objects: dict[str, Node] = {}
        self._vars: dict[str, tuple[ua.NodeId, ua.VariantType]] = {}

    def nodeid(self, path: str) -> ua.NodeId:
        return ua.NodeId(f"_{path}", self.idx)

    async def folder(self, path: str, name: str) -> Node:
        node = self._objects.get(path)
        if node is None:
            node = await self.server.nodes.objects.add_folder(self.nodeid(path), name)
            self._objects[path] = node
        return node

    async def child(self, parent: str, name: str) -> Node:
        path = f"{parent}/{name}"
        node = self._objects.get(path)
        if node is None:
            node = await self._objects[parent].add_object(
                self.nodeid(path), ua.QualifiedName(name, self.idx)
            )
            self._objects[path] = node
        return node

    def has(self, path: str) -> bool:
        return path in self._objects

    async def set(
        self, obj: str, name: str, value: Scalar, *, vtype: ua.VariantType | None = None,
        ts: datetime | None = None,
    ) -> None:
        path = f"{obj}/{name}"
        known = self._vars.get(path)
        if known is None:
            vt = vtype or variant_type_of(value)
            nodeid = self.nodeid(path)
            await self._objects[obj].add_variable(
                nodeid, ua.QualifiedName(name, self.idx), ua.Variant(coerce(value, vt), vt),
                datatype=ua.NodeId(vt.value),
            )
            self._vars[path] = known = (nodeid, vt)
        nodeid, vt = known
        try:
            v = coerce(value, vt)
        except (TypeError, ValueError) as exc:
            log.warning("opcua status value skipped: type changed", variable=path,
                        error=str(exc))
            return
        now = datetime.now(UTC)
        # A NaN in the document means "no value" (no sample yet, not tripped): a client
        # must not read it as a Good number.
        status = _NO_DATA if isinstance(v, float) and v != v else _GOOD
        await self.server.write_attribute_value(
            nodeid, ua.DataValue(ua.Variant(v, vt), StatusCode=status,
                                 SourceTimestamp=ts or now, ServerTimestamp=now),
        )

    async def no_data(self, obj: str, name: str) -> None:
        """A value the document no longer has (None): BadNoData, not the old value."""
        known = self._vars.get(f"{obj}/{name}")
        if known is None:
            return
        nodeid, _ = known
        dv = self.server.read_attribute_value(nodeid)
        now = datetime.now(UTC)
        await self.server.write_attribute_value(nodeid, ua.DataValue(
            dv.Value, StatusCode=_NO_DATA, SourceTimestamp=now, ServerTimestamp=now))

    async def set_tree(self, obj: str, doc: Mapping[str, object]) -> None:
        """Mirror a status dict: scalars become variables, dicts child objects."""
        for key, value in doc.items():
            if isinstance(value, Mapping):
                await self.child(obj, str(key))
                await self.set_tree(f"{obj}/{key}", value)
            elif isinstance(value, bool | int | float | str | datetime):
                await self.set(obj, str(key), value)
            elif value is not None:
                await self.set(obj, str(key), json.dumps(value, default=str))
            else:
                await self.no_data(obj, str(key))


class GatewayObjects:
    """Interlocks, Health, SPC, Measurements and Diagnostics, fed by status and records."""

    def __init__(
        self, server: Server, idx: int, reset: Callable[[str], Awaitable[bool]],
        refresh_status: Callable[[], None],
    ) -> None:
        self.mirror = Mirror(server, idx)
        self.server = server
        self.idx = idx
        self._reset = reset
        self._refresh_status = refresh_status
        self._counts: dict[str, int] = {}

    async def create(self) -> None:
        m = self.mirror
        for path, name in (("interlocks", "Interlocks"), ("health", "Health"), ("spc", "SPC"),
                           ("measurements", "Measurements"), ("wafers", "Wafers"),
                           ("diagnostics", "Diagnostics")):
            await m.folder(path, name)

    async def interlock(self, name: str) -> str:
        obj = f"interlocks/{name}"
        if self.mirror.has(obj):
            return obj
        node = await self.mirror.child("interlocks", name)

        async def reset(parent: ua.NodeId) -> list[ua.Variant]:
            ok = bool(await self._reset(name))
            log.info("opcua interlock reset called", interlock=name, accepted=ok)
            self._refresh_status()
            return [ua.Variant(ok, ua.VariantType.Boolean)]

        await node.add_method(
            self.mirror.nodeid(f"{obj}/Reset"), ua.QualifiedName("Reset", self.idx), reset,
            [], [ua.VariantType.Boolean],
        )
        return obj

    async def apply_status(self, status: StatusDoc) -> None:
        """Mirror the status document: each interlock's ``InterlockStatus`` fields under
        Interlocks/<name>, health and SPC per object, the ``DIAGNOSTICS`` fields under
        Diagnostics (the names are the document's field names: a pinned contract)."""
        for name, state in status.interlocks.items():
            obj = await self.interlock(name)
            await self.mirror.set_tree(obj, _mapping(as_tree(state)))
        if status.health:
            await self.mirror.set_tree("health", _mapping(as_tree(status.health)))
        if status.spc:
            await self.mirror.set_tree("spc", _mapping(as_tree(status.spc)))
        diag = diagnostics(status)
        diag["records"] = dict(self._counts)
        await self.mirror.set_tree("diagnostics", diag)

    async def apply_record(self, record: object) -> None:
        m = self.mirror
        kind = type(record).__name__
        self._counts[kind] = self._counts.get(kind, 0) + 1
        if isinstance(record, InterlockTrip):
            await self._trip(record)
        elif isinstance(record, HealthAlert):
            obj = await self._child("health", record.motor)
            ts = _ts(record.ts_ns)
            await m.set(obj, "LastAlert", record.reason, ts=ts)
            await m.set(obj, "LastAlertHealth", record.health, ts=ts)
            await m.set(obj, "LastAlertTtfS", record.ttf_s, ts=ts)
            await m.set(obj, "LastAlertTime", ts)
        elif isinstance(record, SpcViolation):
            # spc.py starts every detail with the chart's name: the status's object
            obj = await self._child("spc", record.detail.split(":", 1)[0] or record.tag)
            ts = _ts(record.ts_ns)
            n = self._counts[f"spc:{record.tag}"] = self._counts.get(f"spc:{record.tag}", 0) + 1
            await m.set(obj, "ViolationCount", n, vtype=ua.VariantType.UInt32, ts=ts)
            await m.set(obj, "LastRule", record.rule, ts=ts)
            await m.set(obj, "LastValue", record.value, ts=ts)
            await m.set(obj, "LastViolationTime", ts)
        elif isinstance(record, Measurement):
            obj = await self._child("measurements", record.device)
            ts = _ts(record.ts_ns)
            await m.set(obj, "LastPart", record.part_id, ts=ts)
            await m.set(obj, "LastFeature", record.feature, ts=ts)
            await m.set(obj, "LastLength20_mm", record.l20_mm, ts=ts)
            await m.set(obj, "LastUncertainty_mm", record.u_mm, ts=ts)
            await m.set(obj, "LastVerdict", record.verdict, ts=ts)
        elif isinstance(record, WaferStep):
            await self._wafer_step(record)

    async def _child(self, root: str, name: str) -> str:
        await self.mirror.child(root, name)
        return f"{root}/{name}"

    async def _wafer_step(self, step: WaferStep) -> None:
        m, u32 = self.mirror, ua.VariantType.UInt32
        tool = await self._child("wafers", step.tool)
        n = self._counts[f"wafer:{step.tool}"] = self._counts.get(f"wafer:{step.tool}", 0) + 1
        obj = await self._child(tool, "LastWafer")
        ts = _ts(step.end_ns)
        trips = [f"{t.interlock}: {t.tag} {t.condition} {t.value:g} (limit {t.limit:g})"
                 for t in step.trips]
        for name, value, vtype in (
                ("Lot", step.lot, None), ("Recipe", step.recipe, None),
                ("Start", _ts(step.start_ns), None), ("End", ts, None),
                ("FirstSeen", _ts(step.first_seen_ns), None),
                ("DurationS", (step.end_ns - step.start_ns) / 1e9, None),
                ("Trips", len(step.trips), u32), ("TripDetails", "; ".join(trips), None),
                ("Quarantines", len(step.quarantines), u32),
                ("SpcAlarms", len(step.spc_alarms), u32)):
            await m.set(obj, name, value, vtype=vtype, ts=ts)
        tel = await self._child(obj, "Telemetry")
        for s in step.telemetry:
            tag = await self._child(tel, s.tag.replace("/", "."))
            for name, v in (("Min", s.min), ("Mean", s.mean), ("Max", s.max), ("Last", s.last)):
                await m.set(tag, name, v, ts=ts)
            await m.set(tag, "Samples", s.n, vtype=u32, ts=ts)
            await m.set(tag, "BadSamples", s.bad, vtype=u32, ts=ts)
        await m.set(tool, "StepCount", n, vtype=u32, ts=ts)
        await m.set(obj, "WaferId", step.wafer, ts=ts)

    async def _trip(self, trip: InterlockTrip) -> None:
        obj = await self.interlock(trip.interlock)
        ts = _ts(trip.ts_ns)
        await self.mirror.set(obj, "LastAction",
                              f"{trip.action} ({'sent' if trip.action_ok else 'FAILED'})", ts=ts)
        self._refresh_status()  # the status document has the trip now: mirror it at once


def _mapping(value: object) -> Mapping[str, object]:
    assert isinstance(value, Mapping)
    return value
