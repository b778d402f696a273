"""Weight matrices on transparent huge pages, for the decode path that streams them every step.

A decode step reads every weight matrix once. On 4 KB pages that is a TLB miss every 4 KB: measured on the
2-core Xeon this project runs on, a bf16 GEMV over 216 MB of rows streams at 21.5 GB/s on 4 KB pages and
29 GB/s on 2 MB pages (same loop, `madvise(MADV_HUGEPAGE)` the only change). Linux backs an anonymous
range with huge pages when the kernel's THP mode is `always`, or `madvise` and the range asked for it
before its pages were first touched; torch's allocator asks for nothing. So:

`empty(shape, dtype)` returns an uninitialised tensor whose 2 MB-aligned interior was marked MADV_HUGEPAGE
before anything touched it (the storage is one huge page longer, to find that alignment). The decode path
allocates its lower-precision weight copies in one such arena (`decode.place_on_hugepages`). Anywhere THP
is off or unknown (not Linux, mode `never`) it is plain `torch.empty`: same values, 4 KB pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch

HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h


@functools.cache
def _madvise():
    """libc's madvise when transparent huge pages can be asked for, else None."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except OSError:
        return None
    if "[never]" in mode:
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def available() -> bool:
    return _madvise() is not None


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """`torch.empty(shape, dtype)` on huge pages where the system allows it."""
    numel = 1
    for n in shape:
        numel *= int(n)
    item = torch.empty((), dtype=dtype).element_size()
    madvise = _madvise()
    if madvise is None or numel * item < HUGE_PAGE:
        return torch.empty(shape, dtype=dtype)
    pad = HUGE_PAGE // item
    raw = torch.empty(numel + pad, dtype=dtype)  # untouched: no page is backed yet
    start = -raw.data_ptr() % HUGE_PAGE  # bytes to the first 2 MB boundary
    if start % item:
        return torch.empty(shape, dtype=dtype)
    length = (numel * item) // HUGE_PAGE * HUGE_PAGE
    madvise(raw.data_ptr() + start, length, _MADV_HUGEPAGE)  # a refusal only costs the speed-up
    return raw[start // item : start // item + numel].view(shape)
