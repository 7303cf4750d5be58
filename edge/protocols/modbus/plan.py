"""Which Modbus reads cover a register map (pure).

``plan_reads`` merges neighbouring registers of one function into as few requests as
possible. Invariants (checked in the tests): every register is inside exactly one
request of its function; no request is longer than the function's maximum; no request
touches a declared hole (addresses the device refuses); requests are sorted. Gaps that
are not holes are read across, because one longer read is cheaper than two.
Greedy by start address is optimal for this covering problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Function = Literal["holding", "input", "coil", "discrete"]
FUNCTIONS: tuple[Function, ...] = ("holding", "input", "coil", "discrete")


@dataclass(frozen=True, slots=True)
class RegisterRef:
    index: int  # position in the caller's register list
    function: Function
    address: int  # 0-based wire address
    count: int  # registers (or bits) it spans


@dataclass(frozen=True, slots=True)
class ReadRequest:
    function: Function
    address: int
    count: int
    members: tuple[int, ...]  # indices of the registers it carries, by address


def _touches_hole(start: int, end: int, holes: Sequence[tuple[int, int]]) -> bool:
    """True when [start, end) meets an inclusive hole [h0, h1]."""
    return any(h0 < end and h1 >= start for h0, h1 in holes)


def plan_reads(
    registers: Sequence[RegisterRef],
    max_per_read: Mapping[Function, int],
    holes: Sequence[tuple[int, int]] = (),
) -> list[ReadRequest]:
    """The fewest reads covering ``registers``; ValueError if one cannot be read at all."""
    out: list[ReadRequest] = []
    for function in FUNCTIONS:
        regs = sorted((r for r in registers if r.function == function),
                      key=lambda r: (r.address, r.count, r.index))
        limit = max_per_read[function]
        start = end = -1
        members: list[int] = []
        for r in regs:
            r_end = r.address + r.count
            if r.count > limit:
                raise ValueError(
                    f"register #{r.index} spans {r.count}, more than {limit} per read"
                )
            if _touches_hole(r.address, r_end, holes):
                raise ValueError(f"register #{r.index} at {r.address} lies in a hole")
            new_end = max(end, r_end)
            if members and new_end - start <= limit and not _touches_hole(start, new_end, holes):
                end = new_end
                members.append(r.index)
                continue
            if members:
                out.append(ReadRequest(function, start, end - start, tuple(members)))
            start, end, members = r.address, r_end, [r.index]
        if members:
            out.append(ReadRequest(function, start, end - start, tuple(members)))
    return out
