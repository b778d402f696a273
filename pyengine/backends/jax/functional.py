"""What the Flax models share: activations, the preallocated KV cache, masks and attention (jnp, jit-safe).

KV cache (one per decoder stack): `{"index": int32 0-d, "layers": ((k, v), ...)}`, k and v `[B, Hkv, T, D]`
preallocated for T = max_length. A forward of S tokens writes slots `[index, index + S)` with
`lax.dynamic_update_slice` and returns the cache with `index + S`; queries attend to every slot whose
`attention_mask` `[B, T]` entry is 1 and that is not after them (absolute slot order). Heads come before
slots so that the attention dots read the cache as it lies: with `[B, T, H, D]` XLA:CPU transposed every
layer's whole cache on every decode step (about a third of a GPT-2-small step at batch 8).

Shapes: B batch, S new tokens, T key slots, H heads, Hkv key/value heads, D head dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = Any

ACT2FN: dict[str, Callable[[Array], Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def get_activation(name: str) -> Callable[[Array], Array]:
    if name not in ACT2FN:
        raise ValueError(f"activation {name!r} is not supported in Flax; supported: {sorted(ACT2FN)}.")
    return ACT2FN[name]


def new_cache(num_layers: int, batch: int, max_length: int, num_kv_heads: int, head_dim: int, dtype: Any) -> dict:
    """A zeroed cache for `max_length` slots (see the module docstring for the layout)."""
    zeros = jnp.zeros((batch, num_kv_heads, max_length, head_dim), dtype=dtype)
    return {"index": jnp.zeros((), dtype=jnp.int32), "layers": tuple((zeros, zeros) for _ in range(num_layers))}


def cache_length(cache: dict) -> int:
    """T: the number of key slots of a cache from `new_cache`."""
    return cache["layers"][0][0].shape[2]


def write_cache(layer: tuple[Array, Array], k: Array, v: Array, index: Array) -> tuple[Array, Array]:
    """Write k, v `[B, S, Hkv, D]` at slot `index` of one layer's (k, v) `[B, Hkv, T, D]`; pass the result to
    `attend(..., heads_first=True)`."""
    start = (0, 0, index, 0)
    return (lax.dynamic_update_slice(layer[0], jnp.swapaxes(k, 1, 2).astype(layer[0].dtype), start),
            lax.dynamic_update_slice(layer[1], jnp.swapaxes(v, 1, 2).astype(layer[1].dtype), start))  # fmt: skip


def attention_mask_4d(attention_mask: Array | None, batch: int, queries: int, keys: int, index: Any, causal: bool) -> Array:
    """Boolean `[B, 1, S, T]`: key slot t is visible to query s (slot index + s) when the mask allows it and,
    if `causal`, t <= index + s."""
    allowed = jnp.ones((batch, 1, queries, keys), dtype=jnp.bool_)
    if attention_mask is not None:
        allowed = allowed & (jnp.asarray(attention_mask)[:, None, None, :keys] > 0)
    if causal:
        q_slot = index + jnp.arange(queries)[:, None]
        allowed = allowed & (jnp.arange(keys)[None, :] <= q_slot)[None, None]
    return allowed


def attend(q: Array, k: Array, v: Array, mask: Array, scale: float, bias: Array | None = None,
           heads_first: bool = False) -> tuple[Array, Array]:  # fmt: skip
    """Softmax attention: q `[B, S, H, D]`, k/v `[B, T, Hkv, D]` (`[B, Hkv, T, D]`, the cache layout, when
    `heads_first`; grouped heads repeat), mask `[B, 1, S, T]`, optional additive bias `[B or 1, H, S, T]`.
    Returns (out `[B, S, H, D]`, probs `[B, H, S, T]`). Scores and softmax in float32; fully masked rows
    get uniform weights (their output is never used)."""
    if not heads_first:
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    groups = q.shape[2] // k.shape[1]
    if groups > 1:
        k = jnp.repeat(k, groups, axis=1)
        v = jnp.repeat(v, groups, axis=1)
    scores = jnp.einsum("bshd,bhtd->bhst", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhst,bhtd->bshd", probs, v.astype(jnp.float32))
    return out.astype(q.dtype), probs
