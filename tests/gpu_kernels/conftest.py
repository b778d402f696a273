"""Triton kernels on the CPU: every test here runs under TRITON_INTERPRET=1, set (and undone) per test module.

`@triton.jit` picks the interpreter when a function is decorated, i.e. when its module is imported, and that
includes Triton's own library (`tl.sum`, `tl.cumsum`, ... are `@jit` functions). The fixture therefore drops
the kernel modules and lets the tests import them afresh; when Triton itself was already imported without
the interpreter (transformers imports torch._inductor, which imports triton), it also sets that Triton
aside (its compiled `triton._C` stays), imports a fresh one under the interpreter, and puts the original
back afterwards, so later code sees the Triton it had.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

from tests.helpers import has


def _drop(prefix: str, keep: str = "\0") -> dict:
    names = [m for m in sys.modules if (m == prefix or m.startswith(prefix + ".")) and not m.startswith(keep)]
    return {name: sys.modules.pop(name) for name in names}


def _triton_is_compiled_mode() -> bool:
    std = sys.modules.get("triton.language.standard")
    return std is not None and type(std.sum).__name__ != "InterpretedFunction"


@pytest.fixture(autouse=True, scope="module")
def triton_interpreter():
    if not (has("triton") and has("torch")):
        pytest.skip("triton and torch are needed (pip install triton)")
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    _drop("pyengine.kernels.triton")
    saved = _drop("triton", keep="triton._C") if _triton_is_compiled_mode() else {}
    yield
    if before is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = before
    _drop("pyengine.kernels.triton")
    if saved:
        fresh = _drop("triton", keep="triton._C")
        interpreter = fresh.get("triton.runtime.interpreter")
        if interpreter is not None:  # rewritten kernels hold the fresh modules alive
            interpreter.InterpretedFunction.rewritten_fn.clear()
        sys.modules.update(saved)
        del fresh, interpreter
        gc.collect()
