"""Freed memory kept for the next tensor: glibc's allocator tuned for networks on a CPU.

glibc gives every block over 32 MiB fresh pages from the kernel (mmap) and returns them when freed,
so each big activation (a 64-channel map of a 512×768 photo is 100 MB) costs one page fault per
4 KiB, again at every call. Measured on a 2-core VM: the lineart network touched 1.8 GB of fresh
pages (463k faults) per photo, 28% of its CPU time (7.2 → 5.2 s with the memory kept); LeReS 18%
(docs/performance.md). Keeping freed blocks in the heap for reuse makes the
process hold its peak memory instead of handing it back between calls, as PyTorch's CUDA caching
allocator does. The command line does it for its own process; a program importing the library
may call `keep_freed_memory()` itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV = "CONTROLNET_KEEP_FREED_MEMORY"  # "0": leave the allocator as it is
# glibc's variable for each setting: (its mallopt parameter in <malloc.h>, the value)
_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": (-3, 1 << 30), "MALLOC_TRIM_THRESHOLD_": (-1, 2**31 - 1), "MALLOC_ARENA_MAX": (-8, 1)}
GLIBC_ENV = {name: str(value) for name, (_, value) in _SETTINGS.items()}  # the same for another process's environment


def keep_freed_memory() -> bool:
    """Blocks up to 1 GiB from the heap, freed memory kept there (not trimmed) and one arena, so that the
    server's worker thread reuses it too. Whether it was applied: not off glibc (macOS, Windows, musl),
    not when `CONTROLNET_KEEP_FREED_MEMORY=0`, not when the user set glibc's own MALLOC_* variables."""
    if os.environ.get(ENV, "") == "0" or any(name in os.environ for name in GLIBC_ENV):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in _SETTINGS.values())
