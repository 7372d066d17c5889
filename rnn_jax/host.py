"""Host memory under XLA's CPU backend: keep the memory a step frees for the next step.

XLA on a CPU allocates the buffers of each execution with `malloc` and frees them when it ends.
glibc serves large blocks with fresh `mmap`s and returns them to the kernel on `free`, so every
train step faults its whole working set in again, page by page, each page zeroed by the kernel:
measured here (LSTM of 256 units, batch 32 x 128, 2-core CPU) 15k page faults (60 MiB) and
43 ms of kernel time per step. `keep_freed_memory` has glibc serve large blocks from its heap
and keep what is freed there, so the next step reuses the same pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1  # free memory at the top of the heap above this is returned to the kernel
_M_TOP_PAD = -2  # extra bytes requested each time the heap grows
_M_MMAP_MAX = -4  # how many blocks may be mmap-ed at once: 0, none (the heap serves all)
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20))
kept = False  # whether `keep_freed_memory` has applied in this process (recorded in results)


def keep_freed_memory() -> bool:
    """Make the C allocator keep freed memory for reuse instead of returning it to the kernel
    (for the whole process; the resident memory then stays near its peak). The experiments and
    benchmarks call it at start. Returns whether it applied: glibc on Linux only, a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)  # glibc's; not in every C library
    if mallopt is None:
        return False
    global kept
    kept = all(mallopt(option, value) == 1 for option, value in _SETTINGS)
    return kept
