"""``model.Quality`` <-> OPC-UA ``StatusCode``, both directions.

Invariants:

* Severity is never changed by a mapping: a Good quality gives a Good status and back,
  Uncertain gives Uncertain, Bad gives Bad. A status code we have no reason for maps to
  the plain quality of its severity (``BAD``, ``UNCERTAIN``, ``GOOD``); the reserved
  severity ``11`` counts as Bad, as Part 4 (7.34.1) tells clients to do.
* Every quality survives the round trip ``quality_of_status(STATUS_OF_QUALITY[q])``,
  except ``GOOD_COMPENSATED``, which OPC-UA has no code for: it goes out as Good and
  comes back as ``GOOD``.
* Only the code (the top 16 bits) is read back; the info bits of a DataValue's status
  (limit, overflow, semantics changed) do not change the quality.
* ``STATUS_OF_QUALITY`` is indexed by the quality byte of a sample (0-255), so the
  server's write loop looks a status up without building one; a byte that is not a
  ``Quality`` member falls back to its severity.
"""

from __future__ import annotations

from asyncua import ua

from edge.model import Quality

_SC = ua.StatusCodes
QUALITY_STATUS: dict[Quality, int] = {
    Quality.GOOD: _SC.Good,
    Quality.GOOD_COMPENSATED: _SC.Good,
    Quality.UNCERTAIN: _SC.Uncertain,
    Quality.UNCERTAIN_ESTIMATED: _SC.UncertainSubstituteValue,
    Quality.UNCERTAIN_STALE: _SC.UncertainLastUsableValue,
    Quality.UNCERTAIN_OUT_OF_RANGE: _SC.UncertainEngineeringUnitsExceeded,
    Quality.BAD: _SC.Bad,
    Quality.BAD_TIMEOUT: _SC.BadTimeout,
    Quality.BAD_DECODE: _SC.BadDecodingError,
    Quality.BAD_STALE: _SC.BadNoCommunication,
    Quality.BAD_OUT_OF_RANGE: _SC.BadOutOfRange,
    Quality.BAD_DEVICE_EXCEPTION: _SC.BadDeviceFailure,
    Quality.BAD_NOT_CONNECTED: _SC.BadCommunicationError,
    Quality.BAD_MISSING: _SC.BadNoData,
}


def _status_table() -> list[ua.StatusCode]:
    """StatusCode per quality byte; unknown reasons fall back to their severity."""
    table = []
    for code in range(256):
        try:
            value = QUALITY_STATUS[Quality(code)]
        except ValueError:
            value = _SC.Bad if code & 0x80 else _SC.Uncertain if code & 0x40 else _SC.Good
        table.append(ua.StatusCode(value))
    return table


STATUS_OF_QUALITY = _status_table()

# What a server may send for the same reasons, beyond the codes we send ourselves.
_ALSO: dict[int, Quality] = {
    _SC.UncertainNoCommunicationLastUsableValue: Quality.UNCERTAIN_STALE,
    _SC.BadRequestTimeout: Quality.BAD_TIMEOUT,
    _SC.BadDataEncodingInvalid: Quality.BAD_DECODE,
    _SC.BadSensorFailure: Quality.BAD_DEVICE_EXCEPTION,
    _SC.BadNotConnected: Quality.BAD_NOT_CONNECTED,
    _SC.BadServerNotConnected: Quality.BAD_NOT_CONNECTED,
    _SC.BadWaitingForInitialData: Quality.BAD_MISSING,
    _SC.BadNoDataAvailable: Quality.BAD_MISSING,
}
QUALITY_OF_STATUS: dict[int, Quality] = {
    **_ALSO,
    **{code: q for q, code in QUALITY_STATUS.items() if q != Quality.GOOD_COMPENSATED},
}
_CODE_MASK = 0xFFFF0000
_SEVERITY_MASK = 0xC0000000


def quality_of_status(status: ua.StatusCode | int) -> Quality:
    """The quality of a value a server sent with ``status`` (see the module docstring)."""
    value = status.value if isinstance(status, ua.StatusCode) else status
    code = int(value) & _CODE_MASK
    known = QUALITY_OF_STATUS.get(code)
    if known is not None:
        return known
    severity = code & _SEVERITY_MASK
    if severity == 0:
        return Quality.GOOD
    return Quality.UNCERTAIN if severity == 0x40000000 else Quality.BAD
