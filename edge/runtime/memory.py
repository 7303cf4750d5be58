"""Give back the code pages of the kernel compiler once the kernels are loaded.

numba links every kernel (compiled, or loaded from the cache) with LLVM, whose shared
library is ~160 MB of code and tables; start-up faults ~70 MB of it into memory. Once
the kernels are in memory, nothing calls into LLVM again unless a stage that was not
configured at start is built (a reload), so after READY those pages are advised out
(``MADV_PAGEOUT``, Linux >= 5.4): the kernel reclaims them, and a later call into LLVM
faults back in what it needs from the file.

Invariants: only read-only, file-backed mappings of the library are touched (its
relocated data and the JIT-compiled kernels are private memory and stay); nothing here
can fail the daemon: an unsupported kernel or libc only means the pages stay.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

MADV_PAGEOUT = 21
LIBRARIES = ("libllvmlite.so",)


def _mappings(maps: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, length) of the read-only mappings of the named shared libraries."""
    out = []
    for line in maps.splitlines():
        parts = line.split()
        if len(parts) < 6 or "w" in parts[1]:
            continue
        if Path(parts[5]).name in names:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi - lo))
    return out


def resident_kib(names: tuple[str, ...] = LIBRARIES) -> int:
    """KiB of the named libraries' mappings resident in this process (Linux)."""
    total, inside = 0, False
    try:
        with Path("/proc/self/smaps").open() as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    parts = line.split()
                    inside = len(parts) >= 6 and Path(parts[5]).name in names
                elif inside and line.startswith("Rss:"):
                    total += int(line.split()[1])
    except OSError:
        return 0
    return total


def release_compiler_pages() -> tuple[int, str | None]:
    """Advise the compiler's code pages out. Returns (KiB released, why not, or None)."""
    if not sys.platform.startswith("linux"):
        return 0, "not Linux"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError as exc:
        return 0, str(exc)
    regions = _mappings(maps, LIBRARIES)
    if not regions:
        return 0, "the compiler library is not loaded"
    libc = ctypes.CDLL(None, use_errno=True)  # this process: libc is loaded
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    before = resident_kib()
    for start, length in regions:
        if libc.madvise(start, length, MADV_PAGEOUT) != 0:
            err = ctypes.get_errno()
            return 0, f"madvise(MADV_PAGEOUT) failed: errno {err}"
    return max(0, before - resident_kib()), None
