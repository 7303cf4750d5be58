"""The web status page: one HTML page and a JSON API served by the daemon.

A ``[[sinks]]`` entry with ``type = "web"`` (``edge.web.sink``): like the OPC-UA server it
is a live sink, so it gets the latest tag values on the fast path, runs supervised, and
READY waits until it listens. Absent from a config, nothing here is imported.
"""
