"""The compiler's code pages are given back after start-up and the kernels still run."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edge.runtime import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_mappings_keeps_read_only_file_mappings_of_the_named_library() -> None:
    maps = "\n".join([
        "7f00-7f10 r--p 00000000 fe:00 1 /x/libllvmlite.so",
        "7f10-7f20 r-xp 00001000 fe:00 1 /x/libllvmlite.so",
        "7f20-7f30 rw-p 00002000 fe:00 1 /x/libllvmlite.so",  # relocated data: stays
        "7f30-7f40 r-xp 00000000 fe:00 2 /x/libpython3.11.so.1.0",
        "7f40-7f50 rw-p 00000000 00:00 0",
    ])
    assert memory._mappings(maps, ("libllvmlite.so",)) == [(0x7F00, 0x10), (0x7F10, 0x10)]


def test_release_gives_back_most_of_llvm_and_the_kernels_still_run() -> None:
    from edge.processing.kernels import spc

    before = memory.resident_kib()
    assert before > 10 * 1024, "LLVM should be mapped once kernels are loaded"
    released, why_not = memory.release_compiler_pages()
    assert why_not is None
    assert released > before // 2
    assert memory.resident_kib() < before // 2
    z = np.array([0.0, 3.5, -4.0, 1.0, 9.0])
    assert spc._beyond(z, 0, 5, 3.0) == (2, 1)
