"""Loads `pyengine._xla` (csrc/xla/), the XLA custom-call targets of the TF and JAX compiled paths.

The library is plain C (no Python module init): ctypes opens it, and each framework's `kernels.py`
registers its functions with its own XLA (`backends/jax/kernels.py`, `backends/tf/kernels.py`). Nothing
here imports a framework, and nothing runs at `import pyengine`: the first `available()` call opens the
library, and a failure only makes the `cpp` implementations unavailable, with the reason.
"""

from __future__ import annotations

import ctypes
import importlib.util
import platform

# Custom-call ABI of every target (XLA's API_VERSION_STATUS_RETURNING_UNIFIED on CPU):
# fn(void* out, const void** inputs, const char* opaque, size_t opaque_len, void* status)
STATUS_RETURNING_UNIFIED = 3
TARGETS = ("pyengine_linear", "pyengine_attend_cached", "pyengine_top_k_mask", "pyengine_top_p_mask",
           "pyengine_min_p_mask", "pyengine_argmax", "pyengine_sample_from_scores", "pyengine_top_logits",
           "pyengine_top_logits_screen")
_state: dict[str, object] = {}


def available() -> str | None:
    """None when the library is loaded, else the reason it is not."""
    if "reason" not in _state:
        _state["reason"] = _load()
    return _state["reason"]  # type: ignore[return-value]


def library() -> ctypes.CDLL:
    reason = available()
    if reason is not None:
        raise RuntimeError(f"pyengine's XLA kernels are unavailable: {reason}")
    return _state["lib"]  # type: ignore[return-value]


def address(target: str) -> int:
    """The function pointer of a custom-call target, as an int."""
    if target not in TARGETS:
        raise ValueError(f"unknown XLA target {target!r}; known: {TARGETS}")
    return ctypes.cast(getattr(library(), target), ctypes.c_void_p).value  # type: ignore[return-value]


def _load() -> str | None:
    if platform.machine() not in ("x86_64", "AMD64", "aarch64", "arm64"):
        return f"no build for {platform.machine()}"
    spec = importlib.util.find_spec("pyengine._xla")
    if spec is None or spec.origin is None:
        return "pyengine._xla is not built; rebuild with `pip install --no-build-isolation -e .`"
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError as err:
        return f"pyengine._xla did not load: {err}"
    lib.pyengine_register_tf_target.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.pyengine_register_tf_target.restype = ctypes.c_int
    _state["lib"] = lib
    return None
