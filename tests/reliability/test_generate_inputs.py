"""generate() argument validation, property-based.

Promise under test: for any keyword arguments, generate() either returns ids of the documented shape
(`[B * num_return_sequences, <= max_length]`, int64, the prompt as prefix, every id in the vocabulary or
the pad id) or raises ValueError / TypeError whose message names the offending argument. Never an
IndexError from an embedding, a torch RuntimeError, or a comparison TypeError from deep inside.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.reliability._models import EOS, LLAMA_MAX_POSITIONS, N_POSITIONS, VOCAB, tiny_model  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_NEW = 8


@st.composite
def prompts(draw: st.DrawFn) -> torch.Tensor:
    """`[B, S]` with B in 1..3, S in 1..6; ids biased toward both edges of the vocabulary."""
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    token = st.one_of(st.integers(0, VOCAB - 1), st.integers(VOCAB - 3, VOCAB - 1), st.integers(0, 2))
    rows = draw(st.lists(st.lists(token, min_size=length, max_size=length), min_size=batch, max_size=batch))
    return torch.tensor(rows, dtype=torch.long)


@st.composite
def valid_kwargs(draw: st.DrawFn) -> dict:
    """A combination every strategy must accept; bans stay small so some token is always allowed."""
    mode = draw(st.sampled_from(["greedy", "sample", "beam", "beam_sample"]))
    beams = draw(st.integers(2, 3)) if mode.startswith("beam") else 1
    kw: dict = {"do_sample": mode in ("sample", "beam_sample"), "num_beams": beams}
    if mode != "greedy":
        kw["num_return_sequences"] = draw(st.integers(1, beams if beams > 1 else 3))
    kw["max_new_tokens"] = draw(st.integers(1, MAX_NEW))
    optional = {
        "min_length": st.integers(0, 10),
        "temperature": st.floats(0.05, 5.0),
        "top_k": st.integers(0, VOCAB + 10),
        "top_p": st.floats(0.0, 1.0),
        "min_p": st.floats(0.0, 1.0),
        "repetition_penalty": st.floats(0.5, 2.0),
        "no_repeat_ngram_size": st.integers(0, 3),
        "bad_words_ids": st.lists(
            st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=2), min_size=1, max_size=4
        ),
        "eos_token_id": st.one_of(
            st.integers(1, VOCAB - 1),
            st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=2),
            st.just(VOCAB + 3),
        ),
        "pad_token_id": st.integers(0, VOCAB - 1),
        "remove_invalid_values": st.booleans(),
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        kw[name] = draw(optional[name])
    return kw


def _resolved_ids(model, kw: dict) -> tuple[list[int], int | None]:
    """The EOS ids and pad id generate() ends up using (pad defaults to the first EOS)."""
    eos = kw.get("eos_token_id", model.generation_config.eos_token_id)
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    pad = kw.get("pad_token_id", model.generation_config.pad_token_id)
    return eos_ids, pad if pad is not None else (eos_ids[0] if eos_ids else None)


def _check_output(model, prompt: torch.Tensor, kw: dict, out: torch.Tensor) -> None:
    n = kw.get("num_return_sequences", 1)
    batch, length = prompt.shape
    eos_ids, pad = _resolved_ids(model, kw)
    assert out.dtype == torch.int64 and out.dim() == 2
    assert out.shape[0] == batch * n
    assert length < out.shape[1] <= length + kw["max_new_tokens"]
    assert torch.equal(out[:, :length], prompt.repeat_interleave(n, 0)), "the prompt must be the prefix"
    in_vocab = (out >= 0) & (out < VOCAB)
    assert bool((in_vocab | (out == pad)).all()), (
        f"ids outside [0, {VOCAB}) that are not the pad {pad}: {out}"
    )
    live = [eos for eos in eos_ids if 0 <= eos < VOCAB]
    for row in out.tolist():
        generated = row[length:]
        end = next((i + 1 for i, t in enumerate(generated) if t in live), len(generated))
        generated = generated[:end]  # after EOS come pads
        _check_row_constraints(row[:length] + generated, length, kw, live)


def _check_row_constraints(row: list[int], length: int, kw: dict, eos_ids: list[int]) -> None:
    """Bans that hold on every generated token up to EOS: min_length, single-token bad words, n-grams."""
    for pos in range(length, min(kw.get("min_length", 0), len(row))):
        assert row[pos] not in eos_ids, f"EOS at position {pos} < min_length {kw['min_length']}: {row}"
    banned = {w[0] for w in kw.get("bad_words_ids") or [] if len(w) == 1 and w[0] not in eos_ids}
    assert not banned & set(row[length:]), f"a banned word was generated: {row[length:]} vs {banned}"
    n = kw.get("no_repeat_ngram_size", 0)
    if n:
        for end in range(max(length, n - 1), len(row)):
            gram = tuple(row[end - n + 1 : end + 1])
            earlier = {tuple(row[i : i + n]) for i in range(0, end - n + 1)}
            assert gram not in earlier, f"{n}-gram {gram} repeated at position {end}: {row}"


@SETTINGS
@given(family=st.sampled_from(["gpt2", "llama"]), prompt=prompts(), kw=valid_kwargs())
def test_valid_arguments_give_documented_output(family, prompt, kw):
    model = tiny_model(family)
    prompt = prompt.clamp(max=VOCAB - 1)
    torch.manual_seed(0)
    out = model.generate(prompt, **kw)
    _check_output(model, prompt, kw, out)


NAN = float("nan")
# argument -> values generate() must refuse, naming the argument. Sampling-only checks get do_sample=True.
INVALID = {
    "max_new_tokens": [-1, 2.5, "3", True, N_POSITIONS + 1],
    "max_length": [-1, 1.5, "x", N_POSITIONS + 10],
    "min_length": [1.5, "x"],
    "temperature": [0.0, -1.0, NAN, "hot"],
    "top_k": [-1, 2.5, "5"],
    "top_p": [-0.1, 1.5, NAN, "0.5"],
    "min_p": [-0.1, 1.5, NAN, "a"],
    "repetition_penalty": [0.0, -1.0, NAN, "x"],
    "no_repeat_ngram_size": [-1, 1.5],
    "num_beams": [0, -1, 2.0],
    "num_return_sequences": [0, 1.5],
    "bad_words_ids": [[], [[]], [[-1]], [[VOCAB]], [[VOCAB + 10, 3]], "abc", [3]],
    "eos_token_id": ["a", 2.5, [1, "b"]],
    "pad_token_id": ["a", 2.5, -1, VOCAB],  # out of vocab: batch >= 2 rows get fed it after EOS
    "forced_bos_token_id": [VOCAB, -1],
    "forced_eos_token_id": [VOCAB, [1, VOCAB]],
    "attention_mask": ["not a mask"],
}
CASES = [(name, value) for name, values in INVALID.items() for value in values]


@SETTINGS
@given(case=st.sampled_from(CASES), batch=st.integers(2, 3), length=st.integers(1, 6), sample=st.booleans())
def test_invalid_argument_is_refused_naming_it(case, batch, length, sample):
    name, value = case
    model = tiny_model("gpt2")
    prompt = torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(length))
    kw = {"max_new_tokens": 3, "do_sample": sample or name == "temperature", "eos_token_id": EOS, name: value}
    if name == "max_length":
        kw.pop("max_new_tokens")
    if name == "attention_mask":
        kw[name] = torch.ones(batch, length + 1, dtype=torch.long)
    with pytest.raises((ValueError, TypeError)) as info:
        model.generate(prompt, **kw)
    assert f"`{name}`" in str(info.value), f"{name}={value!r}: message does not name it: {info.value}"


@SETTINGS
@given(
    bad=st.sampled_from([-1, VOCAB, VOCAB + 100, 2**40]), batch=st.integers(1, 3), length=st.integers(1, 6)
)
def test_prompt_ids_outside_the_vocabulary_are_refused(bad, batch, length):
    prompt = torch.randint(0, VOCAB, (batch, length))
    prompt[batch - 1, length - 1] = bad
    with pytest.raises(ValueError, match="`input_ids` holds token ids outside the model's vocabulary"):
        tiny_model("gpt2").generate(prompt, max_new_tokens=2)


@pytest.mark.parametrize(
    "prompt", [torch.zeros(3, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3)]
)
def test_prompt_of_wrong_rank_or_dtype_is_refused(prompt):
    with pytest.raises((ValueError, TypeError), match="`inputs`"):
        tiny_model("gpt2").generate(prompt, max_new_tokens=2)


@pytest.mark.parametrize("kw", [{"max_new_tokens": N_POSITIONS}, {"max_length": N_POSITIONS + 1}])
def test_gpt2_length_beyond_learned_positions_is_a_clear_error(kw):
    """Regression: GPT-2 indexed its position table past `n_positions` and died with "IndexError: index out
    of range in self" inside the embedding. generate() now refuses up front, naming both numbers."""
    prompt = torch.tensor([[5, 6, 7]])
    arg = next(iter(kw))
    with pytest.raises(ValueError, match=rf"`{arg}`.*{N_POSITIONS}.*n_positions"):
        tiny_model("gpt2").generate(prompt, **kw)
    out = tiny_model("gpt2").generate(
        prompt, max_length=N_POSITIONS, eos_token_id=VOCAB + 1
    )  # the edge is fine
    assert out.shape == (1, N_POSITIONS)


def test_llama_runs_past_max_position_embeddings():
    """RoPE has no table limit: LLaMA's max_position_embeddings is not a hard cap (as in transformers)."""
    new = LLAMA_MAX_POSITIONS + 4
    out = tiny_model("llama").generate(torch.tensor([[5, 6, 7]]), max_new_tokens=new, eos_token_id=VOCAB + 1)
    assert out.shape == (1, 3 + new)


def test_out_of_vocab_pad_is_fine_when_no_row_is_fed_it():
    """A single row stops at EOS (nothing is fed after it), and beam search never feeds pads: allowed."""
    model = tiny_model("gpt2")
    out = model.generate(torch.tensor([[5, 6]]), max_new_tokens=4, pad_token_id=-1)
    assert out.shape[0] == 1
    beams = model.generate(torch.tensor([[5, 6], [7, 8]]), max_new_tokens=4, num_beams=2, pad_token_id=VOCAB)
    assert beams.shape[0] == 2 and math.isfinite(float(beams.sum()))
