"""Small Keras layers shared by the TF models: each creates its variables at construction, under the
exact name transformers' TF models give them, so `tf_model.h5` files map by name in both directions.

A layer gets its scope (`transformer/h_._0/attn/c_attn`) from the model; its variables are then
`<scope>/<weight>:0` (`weight`, `bias`, `kernel`, `embeddings`, `gamma`, `beta`). Nothing is built
lazily: a fresh model has every weight, so `num_parameters()` and `save_pretrained` work before a call.

Shapes: `B` batch, `S` positions, `E` hidden, `V` vocab.
"""

from __future__ import annotations

from typing import Any

import tf_keras

from pyengine.backends.tf import kernels, tf


def normal(shape: list[int], std: float) -> tf.Tensor:
    """transformers' TF init (`get_initializer`): a truncated normal with standard deviation `std`."""
    return tf.random.truncated_normal(shape, stddev=std)


def variable(value: tf.Tensor, scope: str, name: str, trainable: bool = True) -> tf.Variable:
    return tf.Variable(value, name=f"{scope}/{name}", trainable=trainable)


class TFEmbedding(tf_keras.layers.Layer):
    """Token / position lookup table `[V, E]`; also the tied output projection (`attend`)."""

    def __init__(self, num: int, dim: int, scope: str, std: float = 0.02, weight_name: str = "embeddings",
                 **kwargs) -> None:  # fmt: skip
        super().__init__(name=scope.rsplit("/", 1)[-1], **kwargs)
        self.scope, self.weight_name = scope, weight_name
        self.embeddings = variable(normal([num, dim], std), scope, weight_name)
        self.input_dim, self.output_dim = num, dim

    @property
    def weight(self) -> tf.Variable:
        return self.embeddings

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.embeddings, ids)  # [..., E]

    def attend(self, hidden: tf.Tensor, kernel: tf.Tensor | None = None) -> tf.Tensor:
        """`hidden @ embeddings.T`: logits `[..., V]` of a tied LM head.

        `kernel` is `head_kernel()` computed once per generate call: with it the product is a plain 2-D
        `[N, E] @ [E, V]` matmul. XLA:CPU runs `transpose_b` against the `[V, E]` table ~3x slower at
        batch 8 (measured on GPT-2-small), and the head is the largest matmul of a decode step.
        """
        if kernel is None and one_row_on_cpp(hidden):
            return flat_linear(hidden, self.embeddings)
        if kernel is None:
            return tf.matmul(hidden, self.embeddings, transpose_b=True)
        flat = tf.reshape(hidden, [-1, hidden.shape[-1]])  # [N, E]
        return tf.reshape(tf.matmul(flat, kernel), tf.concat([tf.shape(hidden)[:-1], [kernel.shape[-1]]], 0))

    def head_kernel(self) -> tf.Tensor:
        """The table transposed, `[E, V]`, for `attend(hidden, kernel)`."""
        return tf.transpose(self.embeddings)


class TFLayerNorm(tf_keras.layers.Layer):
    def __init__(self, dim: int, eps: float, scope: str, **kwargs) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1], **kwargs)
        self.eps = eps
        self.gamma = variable(tf.ones([dim]), scope, "gamma")
        self.beta = variable(tf.zeros([dim]), scope, "beta")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + self.eps) * self.gamma + self.beta


class TFRMSNorm(tf_keras.layers.Layer):
    """RMS norm (LLaMA, T5): `x / rms(x) * weight`, computed in float32."""

    def __init__(self, dim: int, eps: float, scope: str, **kwargs) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1], **kwargs)
        self.eps = eps
        self.weight = variable(tf.ones([dim]), scope, "weight")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        variance = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
        return self.weight * (x * tf.math.rsqrt(variance + self.eps))


class TFConv1D(tf_keras.layers.Layer):
    """GPT-2's linear layer: `weight` `[in, out]`, `bias` `[1, out]` (transformers' TF layout)."""

    def __init__(self, nf: int, nx: int, scope: str, std: float = 0.02, **kwargs) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1], **kwargs)
        self.weight = variable(normal([nx, nf], std), scope, "weight")
        self.bias = variable(tf.zeros([1, nf]), scope, "bias")

    def call(self, x: tf.Tensor, weight_nk: tf.Tensor | None = None) -> tf.Tensor:
        """`x @ weight + bias` `[..., out]`; with `weight_nk` (the weight transposed, `[out, in]`, made once
        per generate call) through `kernels.linear`: the C++ product for a decode step's few rows. One row
        under XLA takes the C++ product over the weight as it is."""
        if weight_nk is not None:
            return flat_linear(x, weight_nk, self.bias)
        if one_row_on_cpp(x):
            return flat_linear(x, self.weight, self.bias, weight_kn=True)
        return tf.matmul(x, self.weight) + self.bias


def flat_linear(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor | None = None, weight_kn: bool = False) -> tf.Tensor:
    """`kernels.linear` over the last axis of x `[..., in]`, weight `[out, in]` (or `[in, out]` with
    `weight_kn`): the C++ product for a decode step's few rows under XLA."""
    flat = tf.reshape(x, [-1, x.shape[-1]])  # [M, in]
    out = kernels.linear(flat, weight, bias, weight_kn)
    return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [weight.shape[1 if weight_kn else 0]]], 0))


def one_row_on_cpp(x: tf.Tensor) -> bool:
    """Whether `x` `[..., in]` is one row (batch-1 decode step) traced for XLA with the C++ product chosen.
    Then layers hand it their `[in, out]` weights as they are (`weight_kn`): it streams them at ~32 GB/s,
    XLA's own single-row product at ~21 (GPT-2-small greedy at batch 1: see benchmarks/README.md). More rows
    get `[out, in]` copies made once per call (the models' `nk_weights`), or stay on XLA's product."""
    return x.shape[:-1].num_elements() == 1 and kernels.decode_on_cpp()


class TFDense(tf_keras.layers.Layer):
    """Keras Dense's variables: `kernel` `[in, out]` (the transpose of torch's Linear weight), `bias` `[out]`."""

    def __init__(self, units: int, in_dim: int, scope: str, std: float = 0.02, use_bias: bool = True, **kwargs) -> None:
        super().__init__(name=scope.rsplit("/", 1)[-1], **kwargs)
        self.kernel = variable(normal([in_dim, units], std), scope, "kernel")
        self.bias = variable(tf.zeros([units]), scope, "bias") if use_bias else None

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if one_row_on_cpp(x):
            return flat_linear(x, self.kernel, self.bias, weight_kn=True)
        out = tf.matmul(x, self.kernel)
        return out + self.bias if self.bias is not None else out


def update_cache(cache: tf.Tensor, new: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """Write `new` `[B, H, S, D]` into `cache` `[B, H, T, D]` at positions `[start, start + S)`.

    Traced (our tf.functions compile with XLA): XLA's dynamic-update-slice, which updates the loop-carried
    cache in place. Eager: a select over T (no XLA op kernels outside a compiled function).
    """
    if not tf.executing_eagerly():
        from tensorflow.compiler.tf2xla.python import xla

        return xla.dynamic_update_slice(cache, tf.cast(new, cache.dtype), [0, 0, tf.cast(start, tf.int32), 0])
    total, seq = cache.shape[2], new.shape[2]
    pos = tf.range(total) - tf.cast(start, tf.int32)  # [T]: index into `new`, valid in [0, S)
    hit = (pos >= 0) & (pos < seq)
    placed = tf.gather(new, tf.clip_by_value(pos, 0, seq - 1), axis=2)  # [B, H, T, D]
    return tf.where(hit[None, None, :, None], placed, cache)


def _gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * x * (1.0 + tf.tanh(0.7978845608028654 * (x + 0.044715 * tf.pow(x, 3))))


ACTIVATIONS = {
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "relu": tf.nn.relu,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.tanh,
}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported by the TF models; use one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def attention_bias(mask: tf.Tensor, start: Any, seq: int, causal: bool = True) -> tf.Tensor:
    """Additive bias `[B, 1, S, T]`: 0 where query `start + i` may attend key j (`mask[b, j] == 1` and,
    when causal, `j <= start + i`), the float32 minimum elsewhere (finite: fully padded rows stay NaN-free)."""
    keys = tf.shape(mask)[1]
    allowed = tf.cast(mask, tf.bool)[:, None, None, :]  # [B, 1, 1, T]
    if causal:
        query_pos = tf.cast(start, tf.int32) + tf.range(seq)  # [S]
        allowed = allowed & (tf.range(keys)[None, :] <= query_pos[:, None])[None, None]
    return tf.where(allowed, 0.0, tf.float32.min)


def left_pad_positions(mask: tf.Tensor) -> tf.Tensor:
    """transformers' position ids for left-padded rows: `cumsum(mask) - 1`, pads at 1."""
    mask = tf.cast(mask, tf.int32)
    return tf.where(mask == 0, 1, tf.cumsum(mask, axis=-1) - 1)
