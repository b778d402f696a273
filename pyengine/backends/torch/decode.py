"""The decode path of the PyTorch models: one new token per row, through reused buffers and C++ kernels.

A decode step multiplies a few rows (the batch) by every weight matrix once, so on a CPU its cost is
streaming the weights; the library's GEMV for one row reaches about a quarter of the memory bandwidth.
The model families (`models/<family>/modeling_torch.py`) therefore run a second, decode-only forward
when `decode_cache()` below accepts the call, built from four ops:

    linear_into       out = [acc +] bias + scale * x @ W^T over a list of weights side by side
                      (q|k|v, gate|up): fused projections with no concatenated copy of the parameters
    rms_norm_into     LLaMA's RMSNorm          layer_norm_into   GPT-2's LayerNorm
    decode_attention  RoPE on q and the new k, the new k/v written into the KVCache, attention of the
                      one query over the cache with the padding mask read in place (no [B, 1, 1, T] mask)
    decode_layers     all of a step's layers (norm, q|k|v, attention, o, norm, gate|up, silu * up or
                      gelu, down; LLaMA's or GPT-2's) from the four above, in one parallel region:
                      batch-1 steps are short enough that a dispatch and a fork/join per op, or a return
                      to Python per layer, idles the second core for a tenth of them

The LM head (`Head`) computes every logit, or, when the caller asks for each row's top k only (`top_logits`,
generate's greedy and top-k steps), screens an int8 copy of the head and recomputes the few rows that can
reach the k-th largest (csrc/include/pyengine/top_logits.h): a fifth of SmolLM2's weight stream at batch 1.

Each op writes into a caller-owned buffer (`Workspace`, reused across steps of the same batch size).
The Python function `<op>_reference` next to each is its meaning in torch ops; tests compare the C++
kernel against it. The plain `forward` stays the reference for whole models: logits agree within the
float32 tolerance.

Lower-precision weights (`model.quantize("bf16" | "int8")`) make the decode path read bf16 copies, or
int8 copies with a float32 scale per output row, of every matrix it multiplies (the embedding lookup,
norms, prefill and the reference forward keep the float32 parameters). Activations and accumulation stay
float32: weight-only quantization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pyengine.backends.torch import hugepages
from pyengine.backends.torch.cache import KVCache, gather_rows
from pyengine.ops.top_logits import TOP_LOGITS_MAX_K, TOP_LOGITS_MAX_ROWS

WEIGHTS_DTYPES = ("float32", "bf16", "int8")
# float32 products of more rows than this go to the library GEMM; bf16 / int8 always use linear_into.
# At 8-32 rows ours streams the weights once and is 1.0-2.4x MKL; at 64 rows the two are even standalone
# (0.87-1.09x, benchmarks/results/linear_rows-cpu.jsonl), but in the batch engine MKL repacks every weight
# matrix on every call (its sgemm_scopy was 13% of all samples with a running set of 64): ours up to 64.
LIBRARY_GEMM_MIN_ROWS = 64


# -- references -------------------------------------------------------------------------------------------
def linear_into_reference(out, x, weights, scales, biases, accumulate=False, weight_kn=False) -> None:
    """`out[:, cols_i] = [out +] bias_i + scale_i * x @ W_i^T` for the weights laid side by side in `out`."""
    offset = 0
    for i, w in enumerate(weights):
        w = w.float()
        w = w.t() if not weight_kn else w  # [K, N_i]
        y = x @ w
        if scales:
            y = y * scales[i]
        if biases:
            y = y + biases[i]
        cols = out[:, offset : offset + w.shape[1]]
        cols.add_(y) if accumulate else cols.copy_(y)
        offset += w.shape[1]


def rms_norm_into_reference(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    out.copy_(weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)))


def layer_norm_into_reference(out, x, weight, bias, eps: float) -> None:
    out.copy_(F.layer_norm(x, (x.shape[-1],), weight, bias, eps))


def decode_attention_reference(out, qkv, key_cache, value_cache, cos, sin, positions, length, key_mask,
                               num_heads, scale, rows=None) -> None:  # fmt: skip
    """One query per row: rotate q and the new k, write k/v at cache position `length`, attend over `length + 1`.

    Args:
        out: `[B, H * D]` attention output (heads side by side, as o_proj reads them).
        qkv: `[B, (H + 2 * H_kv) * D]`, the fused projection: q heads, then k heads, then v heads.
        key_cache, value_cache: `[B, H_kv, T_max, D]` (a KVCache layer), written in place.
        cos, sin: RoPE tables `[T_pos, D]` indexed by `positions` `[B]`, or None (GPT-2).
        key_mask: `[B, length + 1]` with nonzero = visible, or None; the newest key is always visible.
        rows: `[B, >= length]` int64 or None: position t < length of row b is read from cache row
            `rows[b, t]` (a beam's ancestry, `KVCache.reorder` without copies); the new position is written
            to, and read from, row b itself.
    """
    batch, kv_heads, _, dim = key_cache.shape
    q = qkv[:, : num_heads * dim].view(batch, num_heads, dim)
    k = qkv[:, num_heads * dim : (num_heads + kv_heads) * dim].view(batch, kv_heads, dim)
    v = qkv[:, (num_heads + kv_heads) * dim :].view(batch, kv_heads, dim)
    if cos is not None:
        c, s = cos[positions][:, None], sin[positions][:, None]  # [B, 1, D]

        def rotate(t):
            return t * c + torch.cat((-t[..., dim // 2 :], t[..., : dim // 2]), -1) * s

        q, k = rotate(q), rotate(k)
    key_cache[:, :, length] = k
    value_cache[:, :, length] = v
    keys, values = key_cache[:, :, : length + 1], value_cache[:, :, : length + 1]  # [B, H_kv, T, D]
    if rows is not None:
        where = torch.cat([rows[:, :length], torch.arange(batch)[:, None]], 1)  # [B, T]: the row holding t
        keys, values = gather_rows(key_cache, where), gather_rows(value_cache, where)
    keys = keys.repeat_interleave(num_heads // kv_heads, 1)  # [B, H, T, D]
    values = values.repeat_interleave(num_heads // kv_heads, 1)
    scores = torch.einsum("bhd,bhtd->bht", q, keys) * scale
    if key_mask is not None:
        visible = key_mask.bool().clone()
        visible[:, -1] = True
        scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
    probs = torch.softmax(scores, -1)
    out.copy_(torch.einsum("bht,bhtd->bhd", probs, values).reshape(batch, -1))


def decode_layers_reference(x, h, qkv, attn, gate_up, norm_in, norm_post, eps, qkv_proj, o_proj, gate_up_proj,
                            down_proj, key_cache, value_cache, cos, sin, positions, length, key_mask, num_heads,
                            scale, rows=None, *, norm_in_bias=(), norm_post_bias=(), activation="silu_mul",
                            weight_kn=False) -> None:  # fmt: skip
    """Pre-norm decoder layers, one after the other, for one new token per row, in place on the residual `x` `[B, E]`.

    LLaMA's layer by default: RMSNorm, `gate|up` then `silu(gate) * up` (`activation="silu_mul"`, `gate_up`
    `[B, 2 I]`). GPT-2's with `norm_in_bias` / `norm_post_bias` (LayerNorm), `activation="gelu_tanh"` (`gate_up`
    is the `[B, I]` MLP input) and `weight_kn` (Conv1D's `[in, out]` weights). `h`, `qkv`, `attn`, `gate_up`
    are scratch buffers (`[B, E]`, `[B, (H + 2 H_kv) D]`, `[B, H D]`, as above). `norm_in`, `norm_post`,
    `key_cache`, `value_cache` and `scale` hold one entry per layer; each `*_proj` is a `(weights, scales,
    biases)` triple of lists holding every layer's entries back to back (`stack_projections`), the same number
    per layer; the rest as `decode_attention`.
    """
    layers = len(norm_in)

    def layer_args(proj, i):
        return [lst[i * (len(lst) // layers) : (i + 1) * (len(lst) // layers)] for lst in proj]

    def norm(weights, biases, i):
        if biases:
            layer_norm_into_reference(h, x, weights[i], biases[i], eps)
        else:
            rms_norm_into_reference(h, x, weights[i], eps)

    for i in range(layers):
        norm(norm_in, norm_in_bias, i)
        linear_into_reference(qkv, h, *layer_args(qkv_proj, i), weight_kn=weight_kn)
        decode_attention_reference(attn, qkv, key_cache[i], value_cache[i], cos, sin, positions, length, key_mask,
                                   num_heads, scale[i], rows)  # fmt: skip
        linear_into_reference(x, attn, *layer_args(o_proj, i), accumulate=True, weight_kn=weight_kn)
        norm(norm_post, norm_post_bias, i)
        linear_into_reference(gate_up, h, *layer_args(gate_up_proj, i), weight_kn=weight_kn)
        if activation == "silu_mul":
            inter = gate_up.shape[1] // 2
            gate = gate_up[:, :inter]
            gate.copy_(F.silu(gate) * gate_up[:, inter:])
        else:
            gate = gate_up
            gate.copy_(F.gelu(gate, approximate="tanh"))
        linear_into_reference(x, gate, *layer_args(down_proj, i), accumulate=True, weight_kn=weight_kn)


# -- the kernels, chosen once ---------------------------------------------------------------------------------
def kernels_unavailable() -> str | None:
    """None when the C++ decode kernels can run, else why not."""
    from pyengine.backends.torch import _C

    reason = _C.available()
    if reason is not None:
        return reason
    if not hasattr(torch.ops.pyengine, "linear_into"):
        return "the built pyengine extension predates the decode kernels; rebuild it"
    return None


def _kernels() -> Any:
    from pyengine.backends.torch import cpp

    return cpp


# -- weights ----------------------------------------------------------------------------------------------------
def check_weights_dtype(weights_dtype: str) -> str:
    name = {"bfloat16": "bf16", "fp32": "float32"}.get(weights_dtype, weights_dtype)
    if name not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype must be one of {WEIGHTS_DTYPES}, got {weights_dtype!r}.")
    return name


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: `weight [N, K] ≈ q * scale[:, None]`, |q| <= 127."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)  # [N]
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


class Linear:
    """A projection of the decode path: one or more weights whose outputs lie side by side.

    float32 weights are the model's own parameters (no copy): `[N, K]` for nn.Linear, or `[K, N]` for
    GPT-2's Conv1D (`weight_kn=True`). bf16 / int8 weights are `[N, K]` copies made once here.
    """

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None] = (),
                 weight_kn: bool = False, weights_dtype: str = "float32") -> None:  # fmt: skip
        self.float_weights = [w.detach() for w in weights]
        self.biases = [b.detach() for b in biases if b is not None]
        self.weight_kn = weight_kn
        self.scales: list[torch.Tensor] = []
        self.quantized = weights_dtype != "float32"
        if weights_dtype == "float32":
            self.weights, self.kn = self.float_weights, weight_kn
        else:
            nk = [w.t() if weight_kn else w for w in self.float_weights]
            if weights_dtype == "bf16":
                self.weights = [w.to(torch.bfloat16).contiguous() for w in nk]
            else:
                self.weights, self.scales = map(list, zip(*(quantize_int8(w) for w in nk)))
            self.kn = False
        self.out_features = sum(w.shape[0 if not weight_kn else 1] for w in self.float_weights)

    def uses_kernel(self, rows: int) -> bool:
        """Whether a product of `rows` rows runs `linear_into` (else the library GEMM)."""
        return self.quantized or rows <= LIBRARY_GEMM_MIN_ROWS

    @property
    def args(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(weights, scales, biases) as `linear_into` takes them."""
        return self.weights, self.scales, self.biases

    def __call__(self, out: torch.Tensor, x: torch.Tensor, accumulate: bool = False) -> None:
        """`out [M, N] (+)= x [M, K] @ W^T + bias`."""
        if not self.uses_kernel(x.shape[0]):
            self._library(out, x, accumulate)
        else:
            _kernels().linear_into(out, x, self.weights, self.scales, self.biases, accumulate, self.kn)

    def _library(self, out: torch.Tensor, x: torch.Tensor, accumulate: bool) -> None:
        offset = 0
        for i, w in enumerate(self.float_weights):
            bias = self.biases[i] if self.biases else None
            if self.weight_kn:
                y = torch.addmm(bias, x, w) if bias is not None else x @ w
            else:
                y = F.linear(x, w, bias)
            cols = out[:, offset : offset + y.shape[1]]
            cols.add_(y) if accumulate else cols.copy_(y)
            offset += y.shape[1]


class Head(Linear):
    """The LM head of a decode path: every logit, or (`top_logits=k`) only each row's top k through a screen.

    The screen (`screen_weights`, the `top_logits` op) reads an int8 copy of the head, a quarter of float32's
    bytes, bounds every logit's distance from its int8 estimate, and recomputes from the head itself only the
    rows that may reach the k-th largest; every other logit is -inf. The kept logits are the ones the full
    product gives (the same arithmetic as one-row `linear_into`), so greedy and top-k sampling choose the same
    tokens. It pays where the step streams weights (up to TOP_LOGITS_MAX_ROWS rows) and costs N * K bytes
    more memory, built on first use.
    """

    def __init__(self, weight: torch.Tensor, weights_dtype: str = "float32") -> None:
        super().__init__([weight], weights_dtype=weights_dtype)
        self.screen: Screen | bool | None = None  # False: the head holds non-finite values, never screened
        self.screened_version = -1

    def screens(self, rows: int, k: int | None) -> bool:
        """Whether a call with `rows` rows and `top_logits=k` takes the screen (made, or made again, here)."""
        if k is None or not 1 <= k <= TOP_LOGITS_MAX_K or not 1 <= rows <= TOP_LOGITS_MAX_ROWS:
            return False
        if self.biases or self.kn or self.scales:  # int8 heads are already int8: nothing to screen
            return False
        # float32 heads are the model's parameter: an in-place change (load_state_dict, `w.mul_()` under
        # no_grad) bumps its version counter, and a stale screen would bound the wrong logits.
        version = self.weights[0]._version
        if self.screen is None or version != self.screened_version:
            self.screen, self.screened_version = screen_weights(self.weights[0]), version
        return self.screen is not False

    def __call__(self, out: torch.Tensor, x: torch.Tensor, accumulate: bool = False,
                 top_logits: int | None = None) -> None:  # fmt: skip
        """`out [M, V] = x @ W^T`; with `top_logits=k`, each row's k largest (and ties) exact and -inf elsewhere."""
        if not accumulate and self.screens(x.shape[0], top_logits):
            _kernels().top_logits(out, x, self.screen, self.weights[0], top_logits)
        else:
            super().__call__(out, x, accumulate)


def check_top_logits(top_logits: Any) -> None:
    """`forward(top_logits=...)` takes None or a positive int."""
    if top_logits is not None and (isinstance(top_logits, bool) or not isinstance(top_logits, int) or top_logits < 1):
        raise ValueError(
            f"top_logits must be a positive int (each row's k largest logits are computed, the rest are -inf) or "
            f"None (every logit); got {top_logits!r}."
        )


@dataclass(frozen=True)
class Screen:
    """An int8 screen of a head `W [N, K]`: `|x . W[n] - scale[n] * (x . q[n])| <= ||x|| * slack[n]`, for the
    float32 results of both products (csrc/include/pyengine/top_logits.h derives the bound)."""

    q: torch.Tensor  # [N, K] int8
    scale: torch.Tensor  # [N] float32
    slack: torch.Tensor  # [N] float32, rounded up


def screen_weights(weight: torch.Tensor) -> Screen | bool:
    """The int8 screen of a head `weight [N, K]` (float32 or bf16), or False when it holds a non-finite entry:
    one pass of the `top_logits_screen` kernel (SmolLM2's head: ~20 ms against ~270 for the reference below)."""
    q, scale, slack = _kernels().top_logits_screen(weight.detach())
    if not bool(torch.isfinite(slack).all()):
        return False
    return Screen(q=q, scale=scale, slack=slack)


def screen_weights_reference(weight: torch.Tensor, chunk: int = 4096) -> Screen | bool:
    """The meaning of `screen_weights`, in float64 torch ops.

    q, scale: `quantize_int8`. slack[n] = (||W[n] - scale[n] q[n]|| + gamma * (||W[n]|| + scale[n] ||q[n]||))
    * (1 + 1e-6), in float64 and rounded up to float32, gamma = (K + 2) u / (1 - (K + 2) u) with u = 2^-24:
    Cauchy-Schwarz on the rounding residual plus the float32 rounding of both dot products (fused
    multiply-adds, scale applied after).
    """
    w32 = weight.detach().float()
    if not bool(torch.isfinite(w32).all()):
        return False
    q, scale = quantize_int8(w32)
    k = w32.shape[1]
    u = 2.0**-24
    gamma = (k + 2) * u / (1 - (k + 2) * u)
    slack = torch.empty(w32.shape[0], dtype=torch.float64)
    for n0 in range(0, w32.shape[0], chunk):  # float64 in slices: a whole [V, K] copy would be GBs
        w = w32[n0 : n0 + chunk].double()
        qs = q[n0 : n0 + chunk].double() * scale[n0 : n0 + chunk, None].double()
        bound = (w - qs).norm(dim=1) + gamma * (w.norm(dim=1) + qs.norm(dim=1))
        slack[n0 : n0 + chunk] = bound * (1 + 1e-6)
    up = slack.float()
    up = torch.where(up.double() < slack, torch.nextafter(up, torch.tensor(float("inf"))), up)
    return Screen(q=q, scale=scale, slack=up.contiguous())


def top_logits_reference(out: torch.Tensor, x: torch.Tensor, screen: Screen, weight: torch.Tensor, k: int) -> int:
    """The meaning of the `top_logits` op: `out[m]` holds `x[m] @ W^T` at the candidates of row m, -inf elsewhere.

    Candidates: columns whose upper bound `approx + ||x|| slack` reaches the k-th largest lower bound
    `approx - ||x|| slack` of their row, where approx is the int8 product; every logit at least the row's k-th
    largest is one. Returns the number of candidates over all rows.
    """
    approx = (x.double() @ screen.q.double().t()) * screen.scale.double()  # [M, N]
    e = x.double().norm(dim=1, keepdim=True) * screen.slack.double()  # [M, N]
    theta = (approx - e).topk(min(k, approx.shape[1]), dim=1).values[:, -1:]  # [M, 1]
    keep = approx + e >= theta
    out.copy_(torch.where(keep, x @ weight.float().t(), torch.tensor(float("-inf"))))
    return int(keep.sum())


def stack_projections(linears: Sequence[Linear]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One projection of every layer as `decode_layers` takes it: (weights, scales, biases), layer after layer."""
    weights = [w for lin in linears for w in lin.weights]
    scales = [s for lin in linears for s in lin.scales]
    biases = [b for lin in linears for b in lin.biases]
    return weights, scales, biases


def place_on_hugepages(linears: Sequence[Linear]) -> None:
    """Move the bf16 / int8 weight copies of `linears` into one huge-page arena, in the order given.

    A step reads the copies in layer order; one arena puts them on 2 MB pages (most matrices are smaller
    than a huge page, so one allocation each would stay on 4 KB pages: see hugepages.py) and back to back
    in that order. float32 weights are the model's own parameters and stay where they are.
    """
    copies = [(lin, i) for lin in linears if lin.quantized for i in range(len(lin.weights))]
    if not copies or not hugepages.available():
        return
    align = 64  # a cache line: every matrix starts on one
    sizes = [-(-lin.weights[i].numel() * lin.weights[i].element_size() // align) * align for lin, i in copies]
    arena = hugepages.empty((sum(sizes),), torch.uint8)
    offset = 0
    for (lin, i), size in zip(copies, sizes):
        w = lin.weights[i]
        view = arena[offset : offset + w.numel() * w.element_size()].view(w.dtype).view(w.shape)
        lin.weights[i] = view.copy_(w)
        offset += size


class Workspace:
    """Activation buffers of one batch size, reused by every step (reallocated when the batch changes)."""

    def __init__(self) -> None:
        self.batch = -1
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, batch: int, width: int) -> torch.Tensor:
        if batch != self.batch:
            self.batch, self.buffers = batch, {}
        buf = self.buffers.get(name)
        if buf is None or buf.shape[1] != width:
            buf = self.buffers[name] = torch.empty(batch, width)
        return buf


# -- when the decode path runs -------------------------------------------------------------------------------
def decode_cache(model: Any, input_ids: Any, past_key_values: Any, inputs_embeds: Any, labels: Any, use_cache: Any,
                 output_attentions: Any, output_hidden_states: Any, logits_to_keep: Any) -> Any:  # fmt: skip
    """The cache a decode-path step would use, or None when this call must take the reference forward.

    The decode path covers one new token per row, in inference (no grad), float32 activations on the CPU,
    with a KVCache (or a cache with an `attend(layer_idx, query, key, value, scaling)` method, such as the
    batch engine's paged view) and nothing extra asked for (attentions, hidden states, loss).
    """
    if model.training or not getattr(model, "decode_path_enabled", True):
        return None
    if input_ids is None or inputs_embeds is not None or labels is not None:
        return None
    if use_cache is False or (use_cache is None and not model.config.use_cache):
        return None
    if input_ids.dim() != 2 or input_ids.shape[1] != 1 or input_ids.device.type != "cpu":
        return None
    if not isinstance(past_key_values, KVCache):
        return None
    cfg = model.config
    if output_attentions or (output_attentions is None and cfg.output_attentions):
        return None
    if output_hidden_states or (output_hidden_states is None and cfg.output_hidden_states):
        return None
    if not isinstance(logits_to_keep, int) or cfg._attn_implementation == "eager":
        return None
    if getattr(cfg, "pruned_heads", None):  # layers with different head counts: the reference forward knows them
        return None
    if type(past_key_values) is not KVCache and not hasattr(past_key_values, "attend"):
        return None  # another cache layout (a KVCache subclass) that only the reference forward knows
    if model.dtype != torch.float32 or torch.is_grad_enabled():
        return None
    if _decode_unavailable() is not None:
        return None
    return past_key_values


def _decode_unavailable() -> str | None:
    if not hasattr(_decode_unavailable, "reason"):
        _decode_unavailable.reason = kernels_unavailable()  # type: ignore[attr-defined]
    return _decode_unavailable.reason  # type: ignore[attr-defined]


def key_mask_for(attention_mask: torch.Tensor | None, total: int) -> torch.Tensor | None:
    """The last `total` columns of a `[B, >= total]` padding mask, as int64 or bool with unit inner stride."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[1] < total:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[1]} positions but past + new tokens = {total}; "
            "pass a mask over the whole sequence."
        )
    mask = attention_mask[:, -total:]
    if mask.dtype not in (torch.long, torch.bool) or mask.stride(-1) != 1:
        mask = mask.to(torch.long).contiguous()
    return mask


def fused_layout(cache: Any, delegated: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], Any] | None:
    """(key caches, value caches, paged) for `decode_layers`: a KVCache's layers (paged None), the batch
    engine's pools with `(block_table, context_lens, write_slots)` when its view offers them
    (`PagedKVView.decode_layout`), or None: the layers go op by op through `cache.attend`."""
    if not delegated:
        return cache.keys, cache.values, None
    layout = getattr(cache, "decode_layout", None)
    return layout() if layout is not None else None


def attend_delegated(cache: Any, layer_idx: int, qkv: torch.Tensor, num_heads: int, kv_heads: int, dim: int,
                     cos_sin: tuple[torch.Tensor, torch.Tensor] | None, scale: float, out: torch.Tensor) -> None:  # fmt: skip
    """Attention through `cache.attend` (the batch engine's contract): q/k/v `[B, H|H_kv, 1, D]` → `out [B, H * D]`."""
    batch = qkv.shape[0]
    q = qkv[:, : num_heads * dim].view(batch, num_heads, 1, dim)
    k = qkv[:, num_heads * dim : (num_heads + kv_heads) * dim].view(batch, kv_heads, 1, dim)
    v = qkv[:, (num_heads + kv_heads) * dim :].reshape(batch, kv_heads, 1, dim)
    if cos_sin is not None:
        cos, sin = cos_sin  # [B, 1, 1, D]
        half = dim // 2
        q = q * cos + torch.cat((-q[..., half:], q[..., :half]), -1) * sin
        k = k * cos + torch.cat((-k[..., half:], k[..., :half]), -1) * sin
    out.copy_(cache.attend(layer_idx, q.contiguous(), k.contiguous(), v, scale).reshape(batch, -1))


class DecodePathMixin:
    """What a causal-LM class needs to run its decode path: `quantize()`, the switch, the built path.

    The family class sets `_decode_path_class` (built from the model on first use, rebuilt when the model's
    weights move, e.g. after `.to()`), and calls `decode_cache()` at the top of its `forward`.
    """

    _decode_path_class: Any = None
    decode_path_enabled = True  # False: every call takes the reference forward
    accepts_top_logits = True  # forward(top_logits=k) on the decode path: the screened head (`Head`)
    weights_dtype = "float32"

    def quantize(self, weights_dtype: str = "int8") -> Any:
        """Let the decode path read lower-precision copies of the weight matrices; returns the model.

        Args:
            weights_dtype: "bf16" (bfloat16 copies), "int8" (symmetric int8 per output row with a float32
                scale), or "float32" (back to the model's own parameters). Activations, norms, attention
                and accumulation stay float32; the float32 parameters stay in place for prefill and the
                reference forward. Made once here; call again after changing the weights.

        Example:
            model = AutoModelForCausalLM.from_pretrained(path).quantize("bf16")
            model.generate(input_ids, max_new_tokens=64)  # every decode step reads bf16 weights
        """
        self.weights_dtype = check_weights_dtype(weights_dtype)
        self.__dict__["_decode_state"] = None
        self.decode_path()
        return self

    def decode_path(self) -> Any:
        state = self.__dict__.get("_decode_state")
        if state is None or state.source != state.fingerprint(self) or state.weights_dtype != self.weights_dtype:
            state = self._decode_path_class(self, self.weights_dtype)
            self.__dict__["_decode_state"] = state
        return state
