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


@pytest.fixture
def linear_calls(monkeypatch):
    """Records `(rows, weight_kn)` of every `backends.tf.kernels.linear` call traced while the test runs."""
    from pyengine.backends.tf import kernels

    seen: list[tuple[int, bool]] = []
    real = kernels.linear

    def spy(x, w, bias=None, weight_kn=False):
        seen.append((int(x.shape[0]), weight_kn))
        return real(x, w, bias, weight_kn)

    monkeypatch.setattr(kernels, "linear", spy)
    return seen


@pytest.fixture
def screened_and_full(monkeypatch):
    """`run(model, prompt, mask, **kwargs)` -> (tokens with the head's int8 screen, tokens with the full head): the
    same compiled generate, traced afresh for each."""
    from pyengine.backends.tf import kernels

    def run(model, prompt, mask, **kwargs):
        outs = []
        for screen in (True, False):
            if not screen:
                monkeypatch.setattr(kernels, "top_logits_screen", lambda w: None)
            model.__dict__.pop("_pyengine_compiled", None)
            outs.append(model.generate(tf.constant(prompt), attention_mask=tf.constant(mask), jit_compile=True,
                                       **kwargs).numpy())  # fmt: skip
        return outs

    return run
