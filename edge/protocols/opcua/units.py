"""Engineering units as OPC-UA ``EUInformation``: the UNECE common code where known.

A unit written in a config (``degC``, ``mbar``) becomes an EUInformation whose UnitId
is its UNECE code packed as OPC-UA Part 8 says (one byte per character); a unit not in
the table keeps its text with UnitId -1 and no namespace, so nothing is invented.
The codes are checked against the OPC Foundation's UNECE_to_OPCUA.csv (UA-Nodeset).
Rec 20 has no millitorr: ``mTorr`` keeps UnitId -1 with its text and description (a
SCADA shows "mTorr"); ``sccm`` is G49, cubic centimetre per minute (at standard
conditions, which the description says).
"""

from __future__ import annotations

from asyncua import ua

UNECE_URI = "http://www.opcfoundation.org/UA/units/un/cefact"

# unit as written in configs -> (UNECE common code, description)
UNITS: dict[str, tuple[str, str]] = {
    "degC": ("CEL", "degree Celsius"), "°C": ("CEL", "degree Celsius"),
    "C": ("CEL", "degree Celsius"), "K": ("KEL", "kelvin"),
    "Pa": ("PAL", "pascal"), "kPa": ("KPA", "kilopascal"), "bar": ("BAR", "bar"),
    "mbar": ("MBR", "millibar"), "Torr": ("UA", "torr"),
    "mTorr": ("", "millitorr (no UNECE Rec 20 code)"),
    "A": ("AMP", "ampere"), "mA": ("4K", "milliampere"), "V": ("VLT", "volt"),
    "W": ("WTT", "watt"), "kW": ("KWT", "kilowatt"), "Hz": ("HTZ", "hertz"),
    "m": ("MTR", "metre"), "mm": ("MMT", "millimetre"), "um": ("4H", "micrometre"),
    "µm": ("4H", "micrometre"), "s": ("SEC", "second"), "ms": ("C26", "millisecond"),
    "%": ("P1", "percent"), "rpm": ("RPM", "revolutions per minute"),
    "kg": ("KGM", "kilogram"), "g": ("GRM", "gram"), "N": ("NEW", "newton"),
    "Nm": ("NU", "newton metre"), "l/min": ("L2", "litre per minute"),
    "sccm": ("G49", "standard cubic centimetre per minute"),
    "ccm": ("G49", "cubic centimetre per minute"), "m/s": ("MTS", "metre per second"),
    "1": ("C62", "one"), "count": ("C62", "one"), "min": ("MIN", "minute"),
    "h": ("HUR", "hour"),
}


def eu_information(unit: str) -> ua.EUInformation:
    """EUInformation for ``unit``: UNECE-coded where known, else UnitId -1 with the text."""
    code, description = UNITS.get(unit, ("", unit))
    unit_id = -1
    if code:
        unit_id = 0
        for ch in code:
            unit_id = (unit_id << 8) | ord(ch)
    display = "°C" if code == "CEL" else unit
    return ua.EUInformation(
        NamespaceUri=UNECE_URI if code else "",
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(display),
        Description=ua.LocalizedText(description),
    )
