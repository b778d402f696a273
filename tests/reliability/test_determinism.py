"""Determinism: the same inputs and seed give the same tokens, run after run and row by row.

- Seeded sampling (`torch.manual_seed`, as in transformers) repeats exactly; a different seed differs.
- Greedy tokens of a prompt are the same alone and inside a left-padded batch with longer prompts
  (attention mask and position ids hide the pads), for GPT-2 and LLaMA.
- Beam search (sequences and scores) repeats exactly.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.reliability._models import VOCAB, tiny_model  # noqa: E402

FAMILIES = ["gpt2", "llama"]
NO_EOS = {"eos_token_id": VOCAB + 1, "pad_token_id": 0}
PROMPTS = [[5, 9, 11], [12, 13, 14, 15, 16, 17], [20]]


def _left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # [B, S]
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_sampling_repeats(family):
    model = tiny_model(family)
    ids, mask = _left_padded(PROMPTS)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(
            model.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=8, top_k=0, **NO_EOS)
        )
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]), "a different seed should change at least one of 24 draws"


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_alone_equals_left_padded_batch(family):
    model = tiny_model(family)
    ids, mask = _left_padded(PROMPTS)
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=6, **NO_EOS)
    for row, prompt in enumerate(PROMPTS):
        alone = model.generate(torch.tensor([prompt]), max_new_tokens=6, **NO_EOS)
        assert batch[row, -6:].tolist() == alone[0, -6:].tolist(), f"row {row} changed by padding"


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_repeats(family):
    model = tiny_model(family)
    ids, mask = _left_padded(PROMPTS)
    kw = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 6, "return_dict_in_generate": True,
          "output_scores": True, "eos_token_id": 3, "pad_token_id": 0}  # fmt: skip
    first = model.generate(ids, attention_mask=mask, **kw)
    second = model.generate(ids, attention_mask=mask, **kw)
    assert torch.equal(first.sequences, second.sequences)
    assert torch.equal(first.sequences_scores, second.sequences_scores)
