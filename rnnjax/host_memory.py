"""Host allocator setting that keeps XLA CPU's per-step temporaries off fresh mmap pages.

An XLA CPU step allocates its temporaries (the [N, V] logits and their gradient, the dense
embedding gradient, ...) anew on every call. With glibc's default settings any block above
the dynamic mmap threshold is mmapped and unmapped each time, so every step pays page faults
on megabytes of fresh zero pages: 12,982 faults and about a quarter of the time of a
PTB-small LSTM step on this project's 2-core CPU (`experiments/results/bench_cpu.md`).
Raising the mmap threshold, the trim threshold and the top pad, and keeping a single arena
(blocks above 64 MB from XLA's worker threads are otherwise always mmapped), makes those
blocks come from, and go back to, the heap, as PyTorch's CPU tuning guide gets with
jemalloc/tcmalloc. The cost is that heap memory the process frees stays with the process
rather than returning to the OS.

`rnnjax` commands call `tune()` at start-up; `RNNJAX_MALLOC=default` leaves glibc as it is.
It is a no-op where the C library has no `mallopt` (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
HEAP_BLOCK_LIMIT = 256 * 2**20  # blocks up to this size come from the heap, not mmap
TRIM_LIMIT = 1024 * 2**20  # free heap memory kept by the process before returning it
TOP_PAD = 64 * 2**20  # extra address space taken per heap growth (untouched pages cost nothing)


def tune() -> bool:
    """Apply the setting (once per process is enough); returns whether it took effect."""
    if os.environ.get("RNNJAX_MALLOC", "").lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    ok = mallopt(M_ARENA_MAX, 1) == 1
    ok = ok and mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT) == 1
    ok = ok and mallopt(M_TRIM_THRESHOLD, TRIM_LIMIT) == 1
    return ok and mallopt(M_TOP_PAD, TOP_PAD) == 1
