"""The TensorFlow backend: XLA-friendly TF ops for the shared engine (`backend.py`, `native.py`).

Import TensorFlow through `from pyengine.backends.tf import tf`, never directly, in pyengine's TF code.

NOTE(issue 8): TensorFlow 2.20 and Triton both carry LLVM in their shared libraries. Loading Triton after
TensorFlow aborts the process ("Option 'bitcode-mdindex-threshold' registered more than once"); loading
Triton first is fine. transformers and the torch backend may import Triton later, so when Triton is
installed and TensorFlow is not loaded yet, Triton is loaded here first.
"""

from __future__ import annotations

import importlib.util
import sys

if "tensorflow" not in sys.modules and importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401  (must load before TensorFlow; see the note above)

try:
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("pyengine's TensorFlow support needs TensorFlow: pip install 'pyengine[tf]'") from exc

__all__ = ["tf"]
