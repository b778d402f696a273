"""The GPU lane: the kernels compiled for a real CUDA device (`.venv/bin/python -m pytest -q tests/gpu`).

Every test here needs torch with CUDA and a device; without one the whole folder is skipped with the reason.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import has


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(autouse=True)
def needs_cuda():
    if not has("torch"):
        pytest.skip("torch is not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("TRITON_INTERPRET is set: the GPU lane runs compiled kernels")
