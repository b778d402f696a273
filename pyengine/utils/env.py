"""Every PYENGINE_* environment variable, typed and documented. Nothing else reads them.

- PYENGINE_IMPL_<OP>: force an implementation of one op (`reference`, `native`, `cpp`, `triton`, `cuda`).
- PYENGINE_NUM_THREADS: threads for CPU kernels and torch (default: torch's choice).
- PYENGINE_JIT: `1` lets the torch backend build the C++ extension on first use (cached under
  ~/.cache/pyengine) when the installed package has no `pyengine._C`; off by default.
"""

from __future__ import annotations

import os


def forced_impl(op: str) -> str | None:
    value = os.environ.get(f"PYENGINE_IMPL_{op.upper()}")
    return value.strip().lower() if value else None


def num_threads() -> int | None:
    value = os.environ.get("PYENGINE_NUM_THREADS")
    if not value:
        return None
    try:
        n = int(value)
    except ValueError as err:
        raise ValueError(f"PYENGINE_NUM_THREADS must be a positive integer, got {value!r}") from err
    if n < 1:
        raise ValueError(f"PYENGINE_NUM_THREADS must be a positive integer, got {value!r}")
    return n


def jit() -> bool:
    """PYENGINE_JIT=1: JIT-build the C++ extension on first use when `pyengine._C` is missing."""
    return os.environ.get("PYENGINE_JIT", "").strip() == "1"
