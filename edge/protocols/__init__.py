"""Protocol code shared by a source and a sink of the same protocol.

One package per protocol (``opcua``, ``modbus``, ``mqtt``): the wire-level pieces that do
not depend on the direction data flows in, such as type and status mappings, codecs,
request planning and security. The components themselves stay with their direction
(``edge/sources/modbus.py`` polls a device, ``edge/sinks/opcua.py`` serves an address
space) and import from here; nothing here imports from ``edge.sources`` or
``edge.sinks``.
"""
