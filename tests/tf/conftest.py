"""TensorFlow tests: skipped when TensorFlow is not installed; TF is imported through pyengine.backends.tf
(which loads Triton first, see the note there) and kept to the CPU with few threads."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Not pytest.importorskip("tensorflow"): TensorFlow must load through pyengine.backends.tf (Triton first).
try:
    from pyengine.backends.tf import tf
except ImportError:
    pytest.skip("TensorFlow is not installed", allow_module_level=True)

tf.config.set_visible_devices([], "GPU")
