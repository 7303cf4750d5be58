"""hw_sim: a seeded, deterministic plant simulator that knows its ground truth.

Parts: a CMM writing CSV file drops (`cmm`), an etch tool serving Modbus TCP
(`etch`), the conveyor/motor line publishing MQTT (`motors`), an MES HTTP server
(`mes`), a TCP link-fault proxy (`link`), all run together by `plant`.

Invariant shared by every part: the physics is pure and stepped on a fixed
simulated tick, so the same seed gives the same data (values and timestamps),
whatever the wall-clock speed; only commands from outside (stop coil, MQTT stop,
admin switches) change the course of a run, and those are written to the ground
truth (`truth`).
"""

__all__ = ["DEFAULT_START_NS"]

#: Fixed start of simulated time used by the pure models unless told otherwise
#: (2026-11-21T10:00:00+00:00), so in-process runs are byte-for-byte repeatable.
DEFAULT_START_NS = 1_795_255_200_000_000_000
