"""generate(num_beams > 1) through the `beam_step` op, token for token against transformers 4.57, and the
beam KV cache: reordering moves only divergent suffixes, and attention then reads exactly what a
copying (index_select) reorder would give.

The parity cases cover what the op's bookkeeping decides: length penalties (positive, zero, negative),
every early_stopping mode, num_return_sequences, an EOS the beams meet mid-way, a left-padded batch of
prompts with different lengths, and the processors the op fuses (repetition penalty, min new tokens,
single-token bad words) as well as one it does not (n-gram bans, applied before the op).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pyengine import AutoModelForCausalLM  # noqa: E402
from pyengine.backends.torch import _C, cpp  # noqa: E402
from pyengine.backends.torch.cache import KVCache  # noqa: E402

VOCAB = 257


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64,
                                  bos_token_id=1, eos_token_id=2)  # fmt: skip
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(path)
    return hf, AutoModelForCausalLM.from_pretrained(path)


def _prompts():
    """Three prompts of lengths 6, 4 and 2, left-padded with 0."""
    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 6))
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0
    ids[2, :4], mask[2, :4] = 0, 0
    return ids, mask


@pytest.fixture(scope="module")
def eos(pair):
    """An EOS id the beams meet mid-way: a token transformers' own beams produce at step 3."""
    hf, _ = pair
    ids, mask = _prompts()
    probe = hf.generate(input_ids=ids, attention_mask=mask, num_beams=3, max_new_tokens=8, pad_token_id=0,
                        eos_token_id=None)  # fmt: skip
    return int(probe[0, ids.shape[1] + 3])


@pytest.fixture
def op_calls(monkeypatch):
    """Counts calls of the C++ beam_step (skips when the extension is not built)."""
    if _C.available() is not None:
        pytest.skip(str(_C.available()))
    calls = []
    real = cpp.beam_step

    def counted(*args, **kwargs):
        calls.append(kwargs.get("log_softmax", True))
        return real(*args, **kwargs)

    from pyengine.backends.torch import backend

    impls = backend.OPS["beam_step"]
    monkeypatch.setitem(backend.OPS, "beam_step", [type(impls[0])("cpp", counted, available=_C.available)] + impls[1:])
    return calls


CASES = [
    {"num_beams": 4},
    {"num_beams": 4, "length_penalty": 2.0},
    {"num_beams": 3, "length_penalty": 0.0, "num_return_sequences": 3},
    {"num_beams": 4, "length_penalty": -1.0, "num_return_sequences": 2},
    {"num_beams": 4, "early_stopping": True, "num_return_sequences": 4},
    {"num_beams": 3, "early_stopping": "never", "length_penalty": 1.5},
    {"num_beams": 2, "early_stopping": "never", "length_penalty": -0.5},
    {"num_beams": 4, "repetition_penalty": 1.4, "min_new_tokens": 3, "bad_words_ids": [[5], [9]]},
    {"num_beams": 3, "no_repeat_ngram_size": 2},  # not fused: applied before the op
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_generate_matches_transformers(pair, eos, op_calls, case):
    hf, ours = pair
    ids, mask = _prompts()
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0, eos_token_id=eos,
                  return_dict_in_generate=True, output_scores=True, **case)  # fmt: skip
    a, b = hf.generate(**kwargs), ours.generate(**kwargs)
    assert op_calls, "generate() did not run the C++ beam_step"
    assert all(op_calls) == ("no_repeat_ngram_size" not in case)  # fused processors: the op's log-softmax
    assert torch.equal(a.sequences, b.sequences), f"\nhf:   {a.sequences.tolist()}\nours: {b.sequences.tolist()}"
    assert torch.equal(a.beam_indices.long(), b.beam_indices.long())
    torch.testing.assert_close(b.sequences_scores, a.sequences_scores, atol=1e-5, rtol=1e-5)
    assert len(a.scores) == len(b.scores)
    for sa, sb in zip(a.scores, b.scores):
        torch.testing.assert_close(sb, sa, atol=1e-5, rtol=1.3e-6)


def test_eos_is_met_mid_way(pair, eos):
    """The EOS fixture really finishes a hypothesis before max length (else the EOS cases test nothing)."""
    _, ours = pair
    ids, mask = _prompts()
    out = ours.generate(input_ids=ids, attention_mask=mask, num_beams=4, max_new_tokens=10, pad_token_id=0,
                        eos_token_id=eos, num_return_sequences=4)  # fmt: skip
    assert (out[:, ids.shape[1]:] == eos).any()


def _filled_cache(B=6, H=2, T=16, D=4, layers=3, length=9):
    cache = KVCache(layers, B, H, D, T)
    for _ in range(length):  # one forward per position, as decoding writes them
        for i in range(layers):
            cache.update(i, torch.randn(B, H, 1, D), torch.randn(B, H, 1, D))
        cache.advance(1)
    return cache


def test_reorder_equals_index_select_and_moves_only_suffixes():
    torch.manual_seed(0)
    cache = _filled_cache()
    copies = [(k.clone(), v.clone()) for k, v in zip(cache.keys, cache.values)]
    pointers = [k.data_ptr() for k in cache.keys]
    for index in ([0, 0, 2, 2, 4, 4], [1, 0, 2, 3, 5, 5], [0, 1, 2, 3, 4, 5], [3, 3, 3, 0, 0, 0]):
        idx = torch.tensor(index)
        before = cache.reorder_bytes
        cache.reorder(idx)
        copies = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in copies]
        for (k, v), (rk, rv) in zip(zip(cache.keys, cache.values), copies):
            assert torch.equal(k[:, :, : cache.length], rk[:, :, : cache.length])
            assert torch.equal(v[:, :, : cache.length], rv[:, :, : cache.length])
        if index == [0, 1, 2, 3, 4, 5]:
            assert cache.reorder_bytes == before  # nobody moved: nothing copied
        for i in range(len(cache.keys)):  # a new position, then the next reorder sees one more
            k, v = torch.randn(6, 2, 1, 4), torch.randn(6, 2, 1, 4)
            cache.update(i, k, v)
            copies[i] = (torch.cat([copies[i][0][:, :, : cache.length], k], 2), torch.cat([copies[i][1][:, :, : cache.length], v], 2))
        cache.advance(1)
    assert [k.data_ptr() for k in cache.keys] == pointers  # reordered in place: no new buffers per step


def test_copy_free_reorder_gathers_the_row_table_only():
    """Once the decode path reads the row table, reorders move no key or value: readers that index the
    buffers (update, cache[i]) see exactly what copying reorders would have given."""
    torch.manual_seed(0)
    cache = _filled_cache()
    copies = [(k.clone(), v.clone()) for k, v in zip(cache.keys, cache.values)]
    assert cache.rows_for_decode() is None  # nothing reordered yet: every row reads its own
    for index in ([0, 0, 2, 2, 4, 4], [1, 0, 2, 3, 5, 5], [3, 3, 3, 0, 0, 0]):
        idx = torch.tensor(index)
        untouched = [k.clone() for k in cache.keys]
        cache.reorder(idx)
        assert all(torch.equal(a, b) for a, b in zip(untouched, cache.keys)) and cache.reorder_bytes == 0
        copies = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in copies]
        for i in range(len(cache.keys)):  # a new position written to each row's own buffer row
            k, v = torch.randn(6, 2, 1, 4), torch.randn(6, 2, 1, 4)
            cache.keys[i][:, :, cache.length : cache.length + 1] = k
            cache.values[i][:, :, cache.length : cache.length + 1] = v
            copies[i] = (torch.cat([copies[i][0][:, :, : cache.length], k], 2), torch.cat([copies[i][1][:, :, : cache.length], v], 2))
        cache.advance(1)
        assert cache.rows_for_decode().shape == (6, cache.capacity)
    for (k, v), (rk, rv) in zip(cache, copies):  # cache[i] moves every row's positions home first
        assert torch.equal(k, rk) and torch.equal(v, rv)
    assert cache.rows is None


def test_siblings_share_their_prefix():
    """After rows 0 and 1 share an ancestor, swapping them moves only the positions written since."""
    cache = _filled_cache(B=2, length=5)
    cache.reorder(torch.tensor([0, 0]))  # both continue row 0: row 1 takes all 5 positions
    per_position = 2 * 4 * 4 * 2 * 3  # H * D * float32 bytes * (keys, values) * layers
    assert cache.reorder_bytes == 5 * per_position
    for i in range(3):
        cache.update(i, torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))
    cache.advance(1)
    cache.reorder(torch.tensor([1, 0]))  # a swap: they differ at position 5 only
    assert cache.reorder_bytes == 5 * per_position + 2 * per_position


def test_beam_generate_with_cache_equals_without(pair):
    """Attention reads the reordered rows: with the cache (reorders) = without it (recomputes everything)."""
    _, ours = pair
    ids, mask = _prompts()
    kwargs = dict(input_ids=ids, attention_mask=mask, num_beams=4, max_new_tokens=8, pad_token_id=0)
    assert torch.equal(ours.generate(**kwargs), ours.generate(use_cache=False, **kwargs))


@pytest.mark.parametrize("case", [CASES[1], CASES[4]], ids=["length_penalty", "early_stopping"])
def test_native_implementations_match_transformers(pair, eos, monkeypatch, case):
    """Without the C++ ops (forced native beam_step and kv_reorder_suffix) the tokens are the same."""
    monkeypatch.setenv("PYENGINE_IMPL_BEAM_STEP", "native")
    monkeypatch.setenv("PYENGINE_IMPL_KV_REORDER_SUFFIX", "native")
    hf, ours = pair
    ids, mask = _prompts()
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0, eos_token_id=eos, **case)
    assert torch.equal(hf.generate(**kwargs), ours.generate(**kwargs))


def test_fill_from_groups_shares_the_prompt_between_siblings():
    """A prompt run once per group: every row of the group holds its keys/values, under one writer, so
    siblings that swap right after the prompt move nothing of it."""
    torch.manual_seed(0)
    prompt = _filled_cache(B=2, length=5)
    cache = KVCache(3, 6, 2, 4, 8)
    cache.fill_from_groups(prompt, 3)
    assert cache.length == 5
    for mine, theirs in zip(cache.keys + cache.values, prompt.keys + prompt.values):
        assert torch.equal(mine[:, :, :5], theirs[:, :, :5].repeat_interleave(3, 0))
    cache.reorder(torch.tensor([2, 0, 1, 5, 3, 3]))  # shuffles inside each group
    assert cache.reorder_bytes == 0
    with pytest.raises(ValueError, match="cannot take"):
        KVCache(3, 5, 2, 4, 8).fill_from_groups(prompt, 3)


@pytest.mark.parametrize("kwargs", [dict(num_beams=4), dict(num_beams=3, num_return_sequences=3),
                                    dict(do_sample=True, num_return_sequences=3)])  # fmt: skip
def test_prompt_pass_once_per_group_equals_once_per_row(pair, kwargs, monkeypatch):
    """generate() runs the prompt once per group of identical rows (beams, return sequences); a model whose
    input hook is overridden runs it once per row, as transformers does. Same tokens and scores."""
    _, ours = pair
    ids, mask = _prompts()
    shared = []
    fill = KVCache.fill_from_groups
    monkeypatch.setattr(KVCache, "fill_from_groups", lambda self, *a: shared.append(a[1]) or fill(self, *a))

    class PerRow(type(ours)):
        def prepare_inputs_for_generation(self, *args, **kw):
            return super().prepare_inputs_for_generation(*args, **kw)

    per_row = PerRow(ours.config).eval()
    per_row.load_state_dict(ours.state_dict())
    outs = []
    for model in (ours, per_row):
        torch.manual_seed(7)
        outs.append(model.generate(ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0, output_scores=True,
                                   return_dict_in_generate=True, **kwargs))  # fmt: skip
    assert shared == [max(kwargs.get("num_beams", 1), kwargs.get("num_return_sequences", 1))]  # once, by `ours`
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    for a, b in zip(outs[0].scores, outs[1].scores):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
