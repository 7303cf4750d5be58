"""The OPC-UA address space of the tag registry, built in bulk.

Invariants:

* Node ids are stable strings derived from the tag key, so SCADA configs survive
  restarts and config reordering: a tag is ``ns=<idx>;s=<device>/<name>``, its
  properties ``s=<device>/<name>.EngineeringUnits`` and ``.EURange``, its device object
  ``s=<device>``. Gateway objects (interlocks, diagnostics) use ids starting with ``_``.
* A tag variable's DataType and the VariantType of every value written to it come from
  the same table (``edge.protocols.opcua.variants.DTYPES``); asyncua drops a write whose
  variant type differs from the node's, so nothing else may pick a variant type for a tag.
* With ``[asset]``, each device object sits in a folder chain of its asset path under
  the root (``Devices/acme/dresden/etch/line1/cell3/etch1``); the folders' ids are
  ``_asset/<path>``. Only the browse path changes: tag and device ids stay as above.
* A numeric tag with both limits configured is an ``AnalogItemType`` with ``EURange``
  (its limits); one without is a ``BaseAnalogType`` with no EURange (never the range
  of its data type: a SCADA scales its trend to EURange, and +-3.4e38 is no range). A tag
  with a unit has ``EngineeringUnits`` (the UNECE code where the unit has one); one
  without has none (an empty EngineeringUnits says nothing and misleads). Booleans are
  plain ``BaseDataVariableType`` (no unit, no range).

The nodes go in through ``opcua_insert.insert_nodes`` (the bulk inserter).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from asyncua import ua

from edge.model import TagSpec
from edge.protocols.opcua.units import eu_information
from edge.protocols.opcua.variants import DTYPES

_MASK = ua.NodeAttributesMask
PROPERTY_MASK = (
    _MASK.DisplayName | _MASK.Value | _MASK.DataType | _MASK.ValueRank | _MASK.AccessLevel
    | _MASK.UserAccessLevel | _MASK.Historizing | _MASK.WriteMask | _MASK.UserWriteMask
)
VARIABLE_MASK = PROPERTY_MASK | _MASK.Description | _MASK.MinimumSamplingInterval
OBJECT_MASK = (
    _MASK.DisplayName | _MASK.Description | _MASK.WriteMask | _MASK.UserWriteMask
    | _MASK.EventNotifier
)

HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
HAS_TYPE_DEFINITION = ua.NodeId(ua.ObjectIds.HasTypeDefinition)
ORGANIZES = ua.NodeId(ua.ObjectIds.Organizes)
FOLDER_TYPE = ua.NodeId(ua.ObjectIds.FolderType)
BASE_OBJECT_TYPE = ua.NodeId(ua.ObjectIds.BaseObjectType)
ANALOG_ITEM_TYPE = ua.NodeId(ua.ObjectIds.AnalogItemType)
BASE_ANALOG_TYPE = ua.NodeId(ua.ObjectIds.BaseAnalogType)
BASE_VARIABLE_TYPE = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
PROPERTY_TYPE = ua.NodeId(ua.ObjectIds.PropertyType)
_READ_HISTORY = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask


def tag_nodeid(tag: TagSpec, idx: int) -> ua.NodeId:
    return ua.NodeId(tag.key, idx)


def object_item(
    nodeid: ua.NodeId, name: str, parent: ua.NodeId, idx: int, *,
    folder: bool = False, description: str = "",
) -> ua.AddNodesItem:
    attrs = ua.ObjectAttributes(
        DisplayName=ua.LocalizedText(name), Description=ua.LocalizedText(description or name)
    )
    attrs.SpecifiedAttributes = OBJECT_MASK
    return ua.AddNodesItem(
        ParentNodeId=parent,
        ReferenceTypeId=ORGANIZES if folder or parent.NamespaceIndex == 0 else HAS_COMPONENT,
        RequestedNewNodeId=nodeid,
        BrowseName=ua.QualifiedName(name, idx),
        NodeClass=ua.NodeClass.Object,
        NodeAttributes=attrs,
        TypeDefinition=FOLDER_TYPE if folder else BASE_OBJECT_TYPE,
    )


def _property_attributes(name: str, value: object, dtype: int) -> ua.VariableAttributes:
    return ua.VariableAttributes(
        DisplayName=ua.LocalizedText(name),
        DataType=ua.NodeId(dtype),
        ValueRank=ua.ValueRank.Scalar,
        Value=ua.Variant(value, ua.VariantType.ExtensionObject),
        SpecifiedAttributes=PROPERTY_MASK,
    )


def _property_item(owner: ua.NodeId, name: str, attrs: ua.VariableAttributes
                   ) -> ua.AddNodesItem:
    return ua.AddNodesItem(
        ParentNodeId=owner,
        ReferenceTypeId=HAS_PROPERTY,
        RequestedNewNodeId=ua.NodeId(f"{owner.Identifier}.{name}", owner.NamespaceIndex),
        BrowseName=ua.QualifiedName(name, 0),
        NodeClass=ua.NodeClass.Variable,
        NodeAttributes=attrs,
        TypeDefinition=PROPERTY_TYPE,
    )


def asset_folders(paths: Mapping[str, tuple[str, ...]], idx: int, root: ua.NodeId
                  ) -> tuple[list[ua.AddNodesItem], dict[str, ua.NodeId]]:
    """The folders of the devices' asset paths (``device -> segments``) under ``root``,
    each folder once, parents first; and the folder each device goes in (a device with
    an empty path is not in the map: it stays under ``root``)."""
    items: list[ua.AddNodesItem] = []
    folders: dict[tuple[str, ...], ua.NodeId] = {}
    places: dict[str, ua.NodeId] = {}
    for device, segments in paths.items():
        parent = root
        for depth in range(1, len(segments) + 1):
            key = segments[:depth]
            node = folders.get(key)
            if node is None:
                node = folders[key] = ua.NodeId("_asset/" + "/".join(key), idx)
                items.append(object_item(node, key[-1], parent, idx, folder=True,
                                         description="/".join(key)))
            parent = node
        if segments:
            places[device] = parent
    return items, places


def tag_items(tags: Iterable[TagSpec], idx: int, root: ua.NodeId,
              places: Mapping[str, ua.NodeId] | None = None, *, history: bool = False
              ) -> list[ua.AddNodesItem]:
    """The AddNodesItems of one object per device (under ``root``, or the folder
    ``places`` gives for it) and its tag variables; with ``history`` their AccessLevel
    carries HistoryRead and Historizing is true.

    Tags with the same unit (or range) share one attributes object for that property:
    inserting reads the attributes, never changes them.
    """
    items: list[ua.AddNodesItem] = []
    devices: dict[str, ua.NodeId] = {}
    units: dict[str, ua.VariableAttributes] = {}
    ranges: dict[tuple[float, float], ua.VariableAttributes] = {}
    for tag in tags:
        device = devices.get(tag.device)
        if device is None:
            device = devices[tag.device] = ua.NodeId(tag.device, idx)
            items.append(
                object_item(device, tag.device, (places or {}).get(tag.device, root), idx,
                            description=f"device {tag.device}")
            )
        t = DTYPES[tag.dtype]
        nodeid = tag_nodeid(tag, idx)
        analog = t.variant != ua.VariantType.Boolean
        ranged = analog and tag.low is not None and tag.high is not None
        initial: object = (0 if t.integer else 0.0) if analog else False
        attrs = ua.VariableAttributes(
            DisplayName=ua.LocalizedText(tag.name),
            Description=ua.LocalizedText(tag.description or tag.key),
            DataType=t.data_type,
            ValueRank=ua.ValueRank.Scalar,
            Value=ua.Variant(initial, t.variant),
            SpecifiedAttributes=VARIABLE_MASK,
        )
        if history:
            attrs.AccessLevel = attrs.UserAccessLevel = _READ_HISTORY
            attrs.Historizing = True
        items.append(ua.AddNodesItem(
            ParentNodeId=device,
            ReferenceTypeId=HAS_COMPONENT,
            RequestedNewNodeId=nodeid,
            BrowseName=ua.QualifiedName(tag.name, idx),
            NodeClass=ua.NodeClass.Variable,
            NodeAttributes=attrs,
            TypeDefinition=(ANALOG_ITEM_TYPE if ranged else BASE_ANALOG_TYPE) if analog
            else BASE_VARIABLE_TYPE,
        ))
        if analog and tag.unit:
            eu = units.get(tag.unit)
            if eu is None:
                eu = units[tag.unit] = _property_attributes(
                    "EngineeringUnits", eu_information(tag.unit), ua.ObjectIds.EUInformation)
            items.append(_property_item(nodeid, "EngineeringUnits", eu))
        if ranged:
            limits = (float(tag.low), float(tag.high))  # type: ignore[arg-type]
            rng = ranges.get(limits)
            if rng is None:
                rng = ranges[limits] = _property_attributes(
                    "EURange", ua.Range(Low=limits[0], High=limits[1]), ua.ObjectIds.Range)
            items.append(_property_item(nodeid, "EURange", rng))
    return items
