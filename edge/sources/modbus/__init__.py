"""The Modbus source (the wire code is in ``edge.protocols.modbus``).

* ``config``: ``ModbusSourceConfig`` (the registry's entry): the transport, the devices,
  their register maps and commands, all checked at load.
* ``source``: ``ModbusSource``, one device over Modbus TCP.
* ``bus``: ``ModbusBusSource``, the devices of one RTU bus (serial, or RTU over TCP).
* ``command``: the write-back port, commands on their own connection.
"""
