"""Modbus pieces shared by a poller (source) and a writer (sink), pure: no sockets.

* ``codec``: register words <-> engineering values (word and byte order, scaling).
* ``plan``: which reads cover a register map (merged requests, holes respected).
"""
