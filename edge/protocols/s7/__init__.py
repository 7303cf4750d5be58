"""Siemens S7 (ISO-on-TCP) protocol code shared by an S7 source and any future S7 sink:
addresses (``address.py``), the S7 types (``codec.py``) and read planning (``plan.py``).
Pure: no sockets, no threads; the client library stays in the component."""
