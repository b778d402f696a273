"""The triton / cuda entries of the torch op table: where they sit, when they are chosen, why they are not."""

from __future__ import annotations

import sys

import numpy as np
import pytest


def test_triton_entries_come_before_cpp_and_native():
    from pyengine.backends.torch import triton
    from pyengine.backends.torch.backend import OPS

    for op in triton.OPS:
        labels = [i.label for i in OPS[op]]
        assert labels.index("triton") < labels.index("native"), op
    assert [i.label for i in OPS["fused_sample"]][:2] == ["cuda", "triton"]


def test_forced_triton_under_the_interpreter_runs_the_kernel(monkeypatch):
    import torch

    from pyengine.backends.torch.backend import TorchBackend

    monkeypatch.setenv("PYENGINE_IMPL_FUSED_SAMPLE", "triton")
    ops = TorchBackend().ops
    got = ops.fused_sample(torch.tensor([[0.0, 5.0, 1.0]]), torch.zeros(1, 1, dtype=torch.long), top_k=1)
    assert ops.chosen["fused_sample"].label == "triton" and got.tolist() == [1]
    kernel = sys.modules["pyengine.kernels.triton.sampling"]._fused_sample_kernel
    assert type(kernel).__name__ == "InterpretedFunction"


def test_automatic_choice_skips_the_interpreter_quietly(monkeypatch, recwarn):
    from pyengine.backends.torch.backend import OPS
    from pyengine.ops import registry

    monkeypatch.delenv("PYENGINE_IMPL_ARGMAX", raising=False)
    monkeypatch.setattr(registry, "_warned", set())
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device makes triton the automatic choice")
    assert registry.select("argmax", OPS["argmax"]).label in ("cpp", "native")
    assert not [w for w in recwarn if "triton" in str(w.message)]


def test_forced_triton_without_a_gpu_or_the_interpreter_raises_with_the_reason(monkeypatch):
    import torch

    from pyengine.backends.torch.backend import OPS
    from pyengine.ops import registry

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("PYENGINE_IMPL_ARGMAX", "triton")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        registry.select("argmax", OPS["argmax"])


def test_forced_cuda_without_a_cuda_build_raises_with_the_reason(monkeypatch):
    import torch

    from pyengine.backends.torch import cuda
    from pyengine.backends.torch.backend import OPS
    from pyengine.ops import registry

    if cuda.available() is None:
        pytest.skip("the CUDA kernels are built and a device is present")
    monkeypatch.setenv("PYENGINE_IMPL_FUSED_SAMPLE", "cuda")
    with pytest.raises(RuntimeError, match="CUDA|extension|built"):
        registry.select("fused_sample", OPS["fused_sample"])
    s = torch.tensor([[0.0, 5.0, 1.0]])  # the wrapper itself passes CPU tensors on to cpp/native
    assert cuda.fused_sample(s, torch.zeros(1, 1, dtype=torch.long), top_k=1).tolist() == [1]


def test_cpu_tensors_without_the_interpreter_go_to_cpp_or_native(monkeypatch, rng):
    import torch

    from pyengine.backends.torch import triton
    from pyengine.ops import fused as ref

    monkeypatch.delenv("TRITON_INTERPRET")
    s = (rng.standard_normal((3, 50)) * 2).astype(np.float32)
    tok = np.zeros((3, 2), np.int64)
    got = triton.fused_sample(torch.from_numpy(s), torch.from_numpy(tok), top_k=5, seed=[1, 2, 3])
    np.testing.assert_array_equal(got.numpy(), ref.fused_sample(s, tok, top_k=5, seed=[1, 2, 3]))
