"""OPC-UA mappings shared by the server sink and a client source: types, units, status."""

from __future__ import annotations

from typing import get_args

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from edge.model import DataType, Quality, severity
from edge.protocols.opcua.status import STATUS_OF_QUALITY, quality_of_status
from edge.protocols.opcua.units import eu_information
from edge.protocols.opcua.variants import DTYPES, data_type_of

SC = ua.StatusCodes


def _severity(status: ua.StatusCode) -> str:
    return "good" if status.is_good() else "uncertain" if status.is_uncertain() else "bad"


def test_quality_maps_to_status_codes() -> None:
    """Each model quality maps to its OPC-UA status; unknown reasons keep their severity."""
    assert STATUS_OF_QUALITY[Quality.BAD_TIMEOUT].value == SC.BadTimeout
    assert STATUS_OF_QUALITY[Quality.BAD_NOT_CONNECTED].value == SC.BadCommunicationError
    assert STATUS_OF_QUALITY[Quality.BAD_OUT_OF_RANGE].value == SC.BadOutOfRange
    assert STATUS_OF_QUALITY[Quality.UNCERTAIN_STALE].value == SC.UncertainLastUsableValue
    assert STATUS_OF_QUALITY[Quality.GOOD_COMPENSATED].value == SC.Good
    assert STATUS_OF_QUALITY[0x9F].is_bad()
    assert STATUS_OF_QUALITY[0x5F].is_uncertain()
    assert STATUS_OF_QUALITY[0x1F].is_good()


@pytest.mark.parametrize("quality", list(Quality), ids=lambda q: q.name)
def test_every_quality_survives_the_round_trip(quality: Quality) -> None:
    """A quality sent as a status comes back as itself (compensated comes back Good)."""
    back = quality_of_status(STATUS_OF_QUALITY[quality])
    assert back == (Quality.GOOD if quality == Quality.GOOD_COMPENSATED else quality)


def test_status_codes_a_server_sends_map_to_their_reason() -> None:
    """Codes other servers use for our reasons map to them, not just to a severity."""
    assert quality_of_status(SC.BadWaitingForInitialData) == Quality.BAD_MISSING
    assert quality_of_status(SC.BadNotConnected) == Quality.BAD_NOT_CONNECTED
    assert quality_of_status(SC.BadServerNotConnected) == Quality.BAD_NOT_CONNECTED
    assert quality_of_status(SC.BadSensorFailure) == Quality.BAD_DEVICE_EXCEPTION
    assert quality_of_status(SC.UncertainNoCommunicationLastUsableValue) == \
        Quality.UNCERTAIN_STALE
    assert quality_of_status(ua.StatusCode(SC.BadDeviceFailure)) == \
        Quality.BAD_DEVICE_EXCEPTION


def test_unknown_status_codes_fall_back_to_their_severity() -> None:
    """A code we have no reason for gives the plain quality of its severity."""
    assert quality_of_status(SC.GoodLocalOverride) == Quality.GOOD
    assert quality_of_status(SC.UncertainSensorNotAccurate) == Quality.UNCERTAIN
    assert quality_of_status(SC.BadConfigurationError) == Quality.BAD
    assert quality_of_status(0xC0000000) == Quality.BAD  # reserved severity counts as Bad


def test_info_bits_do_not_change_the_quality() -> None:
    """Limit, overflow and semantics-changed bits of a DataValue's status are ignored."""
    info = 0x0400 | 0x0300 | 0x0080 | 0x4000  # DataValue info type, limit high, overflow
    assert quality_of_status(SC.BadTimeout | info) == Quality.BAD_TIMEOUT
    assert quality_of_status(ua.StatusCode(SC.Good | info)) == Quality.GOOD
    assert quality_of_status(SC.UncertainLastUsableValue | 0x0100) == Quality.UNCERTAIN_STALE


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_status_to_quality_keeps_the_severity(value: int) -> None:
    """Any 32-bit status code maps to a quality of the same severity as asyncua reads it."""
    assert quality_of_status(value).severity == _severity(ua.StatusCode(value))


@pytest.mark.parametrize("byte", range(256))
def test_quality_to_status_keeps_the_severity(byte: int) -> None:
    """Every quality byte, known or not, maps to a status of its own severity."""
    assert _severity(STATUS_OF_QUALITY[byte]) == severity(byte)


@pytest.mark.parametrize("dtype", get_args(DataType))
def test_every_data_type_has_a_variant_and_back(dtype: DataType) -> None:
    """Each data type has one VariantType, its node DataType id, and maps back to itself."""
    t = DTYPES[dtype]
    assert t.data_type == ua.NodeId(t.variant.value)
    assert data_type_of(t.variant) == dtype


def test_a_variant_without_a_data_type_is_refused_by_name() -> None:
    """A String (or any variant we have no type for) is an error naming it, not a guess."""
    with pytest.raises(ValueError, match="String has no data type here"):
        data_type_of(ua.VariantType.String)


def test_units_carry_unece_codes() -> None:
    """Known units get their UNECE code; unknown ones keep their text with UnitId -1."""
    assert eu_information("degC").UnitId == (ord("C") << 16) | (ord("E") << 8) | ord("L")
    other = eu_information("furlong")
    assert (other.UnitId, other.DisplayName.Text) == (-1, "furlong")
