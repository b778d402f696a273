"""Test helpers: which backends are installed, conversions between them."""

from __future__ import annotations

import importlib.util

import numpy as np


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def backends() -> list[str]:
    names = ["numpy"]
    if has("torch"):
        names.append("torch")
    return names


def make_backend(name: str):
    if name == "numpy":
        from pyengine.backends.numpy.backend import NumpyBackend

        return NumpyBackend()
    from pyengine.backends.torch.backend import TorchBackend

    return TorchBackend()


def to_backend(name: str, array: np.ndarray):
    if name == "numpy":
        return array
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def to_numpy(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()




def torch_impls(op: str) -> list:
    """The torch implementations of `op` this machine runs, as pytest params (id = impl label).

    GPU impls (`quiet`) without a GPU are left out: their own tests (tests/gpu_kernels, Triton's
    interpreter on small shapes) cover them; on these shapes they would only be slow.
    """
    if not has("torch"):
        return []
    import pytest

    from pyengine.backends.torch.backend import OPS

    return [pytest.param(i.fn, id=i.label) for i in OPS[op] if not (i.quiet and i.available() is not None)]
