"""The Siemens S7 source (the wire code is in ``edge.protocols.s7``).

* ``config``: ``S7SourceConfig`` (the registry's entry): the PLC, its tags and commands,
  all checked at load.
* ``source``: ``S7Source``, polling one PLC through python-snap7.
* ``command``: the write-back port, commands on their own connection.
"""
