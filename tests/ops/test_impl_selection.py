"""Choosing implementations: PYENGINE_IMPL_<OP> forcing, unavailable cpp, unknown labels."""

from __future__ import annotations

import pytest

from pyengine.ops import registry
from tests.helpers import has

pytestmark = pytest.mark.skipif(not has("torch"), reason="torch not installed")


def test_cpp_comes_before_native_for_every_accelerated_op():
    from pyengine.backends.torch.backend import CPP_OPS, OPS

    for op in CPP_OPS:
        labels = [i.label for i in OPS[op]]
        assert labels.index("cpp") < labels.index("native"), op


def test_forced_cpp_unavailable_raises_with_the_reason(monkeypatch):
    from pyengine.backends.torch import _C
    from pyengine.backends.torch.backend import OPS

    monkeypatch.setattr(_C, "available", lambda: "simulated: no compiler")
    impls = [registry.Impl(i.label, i.fn, available=_C.available if i.label == "cpp" else i.available) for i in OPS["top_k_mask"]]
    monkeypatch.setenv("PYENGINE_IMPL_TOP_K_MASK", "cpp")
    with pytest.raises(RuntimeError, match="simulated: no compiler"):
        registry.select("top_k_mask", impls)


def test_forced_native_works(monkeypatch):
    import torch

    from pyengine.backends.torch.backend import TorchBackend

    monkeypatch.setenv("PYENGINE_IMPL_TOP_K_MASK", "native")
    ops = TorchBackend().ops
    out = ops.top_k_mask(torch.tensor([[1.0, 3.0, 2.0]]), 1)
    assert ops.chosen["top_k_mask"].label == "native"
    assert torch.isinf(out).tolist() == [[True, False, True]]


def test_forced_unknown_label_errors(monkeypatch):
    from pyengine.backends.torch.backend import OPS

    monkeypatch.setenv("PYENGINE_IMPL_TOP_K_MASK", "cuda")
    with pytest.raises(ValueError, match="no such implementation"):
        registry.select("top_k_mask", OPS["top_k_mask"])


def test_automatic_choice_skips_unavailable_cpp_with_a_warning(monkeypatch):
    from pyengine.backends.torch.backend import OPS

    monkeypatch.delenv("PYENGINE_IMPL_ARGMAX", raising=False)
    monkeypatch.setattr(registry, "_warned", set())
    impls = [registry.Impl(i.label, i.fn, available=(lambda: "simulated") if i.label == "cpp" else i.available) for i in OPS["argmax"]]
    with pytest.warns(UserWarning, match="simulated"):
        assert registry.select("argmax", impls).label == "native"


def test_extension_reports_build_info():
    from pyengine.backends.torch import _C

    if _C.available() is not None:
        pytest.skip(_C.available())
    info = _C.build_info()
    assert set(info) >= {"isa", "openmp", "compiler"}
