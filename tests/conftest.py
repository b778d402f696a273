"""Shared fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Without CUDA, Triton runs only in its interpreter. Decide that once, before anything imports triton
# (transformers does through torch._inductor; the TF backend preloads it, see pyengine/backends/tf), so every
# import sees the same mode. The interpreter is never picked automatically (pyengine/backends/torch/triton.py),
# so only the tests that force `triton` run it.
if "TRITON_INTERPRET" not in os.environ and not _cuda():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
