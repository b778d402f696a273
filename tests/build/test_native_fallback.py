"""Without the C++ extension everything still works on native (STYLE.md section 6, build/)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import has

pytestmark = pytest.mark.skipif(not has("torch"), reason="torch not installed")


def test_every_op_falls_back_to_native_when_the_extension_is_unavailable(monkeypatch):
    import torch

    from pyengine.backends.torch import _C
    from pyengine.backends.torch.backend import TorchBackend
    from pyengine.ops import registry

    monkeypatch.setattr(_C, "available", lambda: "simulated: extension disabled")
    monkeypatch.setattr(registry, "_warned", set())
    # OPS captured the original function object; rebind the cpp entries to the patched one
    from pyengine.backends.torch import backend

    tables = {op: [registry.Impl(i.label, i.fn, available=_C.available if i.label == "cpp" else i.available)
                   for i in impls] for op, impls in backend.OPS.items()}
    monkeypatch.setattr(backend, "OPS", tables)
    with pytest.warns(UserWarning, match="simulated"):
        chosen = TorchBackend().ops.labels()
    assert set(chosen.values()) == {"native"}
    ops = TorchBackend().ops
    s = torch.randn(3, 50)
    tokens = torch.randint(0, 50, (3, 7))
    assert ops.top_k_mask(s, 5).isfinite().sum(-1).tolist() == [5, 5, 5]
    assert ops.fused_sample(s, tokens, top_k=5, seed=1).shape == (3,)
    table = ops.ngram_table_init(3, 16)
    ops.ngram_table_add(table, tokens, 2)
    assert ops.ngram_ban(s, table, tokens, 2).shape == s.shape


def test_import_pyengine_without_the_extension_in_a_subprocess(tmp_path):
    """A package without `_C` (simulated by blocking the import) imports, selects native, and says why."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'pyengine._C': raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import warnings, pyengine, torch\n"
        "from pyengine.backends.torch import _C\n"
        "from pyengine.backends.torch.backend import TorchBackend\n"
        "assert 'blocked for the test' in _C.available(), _C.available()\n"
        "warnings.simplefilter('ignore')\n"
        "print(TorchBackend().ops.labels()['top_p_mask'])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYENGINE_JIT": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "native"


def test_native_results_match_reference_without_extension(monkeypatch, rng):
    import torch

    from pyengine.backends.torch import native
    from pyengine.ops import fused

    s = (rng.standard_normal((4, 300)) * 2).astype(np.float32)
    tokens = rng.integers(0, 300, (4, 6))
    want = fused.fused_sample(s, tokens, top_k=20, top_p=0.9, seed=5, step=2)
    got = native.fused_sample(torch.from_numpy(s), torch.from_numpy(tokens), top_k=20, top_p=0.9, seed=5, step=2)
    assert got.tolist() == want.tolist()
