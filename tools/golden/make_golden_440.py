"""Write golden files with transformers 4.40.x for the features transformers 4.57 no longer runs locally.

transformers 4.57 removed the public per-strategy methods (greedy_search, sample, beam_search,
beam_sample, group_beam_search) and moved group beam search to a hub download. 4.40 is the last release
with all of them. Run this in a separate environment:

    python3 -m venv /tmp/venv440
    /tmp/venv440/bin/pip install torch==2.13.0 "transformers==4.40.2" "numpy<2" "huggingface_hub<0.25" safetensors
    /tmp/venv440/bin/python tools/golden/make_golden_440.py tests/assets/golden440

It writes, per tiny random model: the checkpoint (config.json + model.safetensors, written by 4.40), and
`cases.json` + `scores.npz`: inputs, the call (method and arguments, described as data), and the
outputs (sequences, sequences_scores, beam_indices, per-step scores). tests/compat/test_golden_440.py
replays every case on pyengine.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import (
    BeamSearchScorer,
    HammingDiversityLogitsProcessor,
    LogitsProcessorList,
    MaxLengthCriteria,
    MinLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

VOCAB = 1000
PROCESSORS = {
    "RepetitionPenaltyLogitsProcessor": RepetitionPenaltyLogitsProcessor,
    "NoRepeatNGramLogitsProcessor": NoRepeatNGramLogitsProcessor,
    "MinLengthLogitsProcessor": MinLengthLogitsProcessor,
    "HammingDiversityLogitsProcessor": HammingDiversityLogitsProcessor,
    "TemperatureLogitsWarper": TemperatureLogitsWarper,
    "TopKLogitsWarper": TopKLogitsWarper,
    "TopPLogitsWarper": TopPLogitsWarper,
}


def build(family: str):
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=128,
                                      bos_token_id=1, eos_token_id=2)
        return transformers.GPT2LMHeadModel(cfg).eval()
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=128,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0
    ids[2, :4], mask[2, :4] = 0, 0
    return ids, mask


def make_list(specs, cls):
    return cls([PROCESSORS[name](*args) for name, args in specs])


def run_case(model, case, ids, mask):
    if case.get("seed") is not None:
        torch.manual_seed(case["seed"])
    method = case["method"]
    if method == "generate":
        return model.generate(input_ids=ids, attention_mask=mask, **case["kwargs"])
    expand = case.get("expand", 1)
    ids_e, mask_e = ids.repeat_interleave(expand, 0), mask.repeat_interleave(expand, 0)
    kwargs = dict(case["kwargs"])
    kwargs["logits_processor"] = make_list(case.get("processors", []), LogitsProcessorList)
    if "warpers" in case:
        kwargs["logits_warper"] = make_list(case["warpers"], LogitsProcessorList)
    kwargs["stopping_criteria"] = StoppingCriteriaList([MaxLengthCriteria(max_length=case["max_length"])])
    if "scorer" in case:
        kwargs["beam_scorer"] = BeamSearchScorer(device="cpu", **case["scorer"])
    return getattr(model, method)(ids_e, attention_mask=mask_e, **kwargs)


def cases(eos: int):
    common = {"pad_token_id": 0, "eos_token_id": eos, "return_dict_in_generate": True, "output_scores": True}
    return [
        {"id": "generate_group_beam_2x2", "method": "generate",
         "kwargs": {**common, "num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0, "max_new_tokens": 8,
                    "num_return_sequences": 2}},
        {"id": "generate_group_beam_3x2", "method": "generate",
         "kwargs": {**common, "num_beams": 6, "num_beam_groups": 3, "diversity_penalty": 0.5, "length_penalty": 0.7,
                    "early_stopping": True, "max_new_tokens": 8, "repetition_penalty": 1.2}},
        {"id": "greedy_search", "method": "greedy_search", "max_length": 15,
         "processors": [["RepetitionPenaltyLogitsProcessor", [1.3]], ["NoRepeatNGramLogitsProcessor", [2]]],
         "kwargs": common},
        {"id": "sample", "method": "sample", "seed": 11, "max_length": 15,
         "processors": [["MinLengthLogitsProcessor", [12, eos]]],
         "warpers": [["TemperatureLogitsWarper", [0.7]], ["TopKLogitsWarper", [20]]], "kwargs": common},
        {"id": "beam_search", "method": "beam_search", "expand": 3, "max_length": 15,
         "processors": [["NoRepeatNGramLogitsProcessor", [2]]],
         "scorer": {"batch_size": 3, "num_beams": 3, "num_beam_hyps_to_keep": 2}, "kwargs": common},
        {"id": "beam_sample", "method": "beam_sample", "seed": 5, "expand": 3, "max_length": 14,
         "warpers": [["TopKLogitsWarper", [10]], ["TopPLogitsWarper", [0.9]]],
         "scorer": {"batch_size": 3, "num_beams": 3}, "kwargs": common},
        {"id": "group_beam_search", "method": "group_beam_search", "expand": 4, "max_length": 14,
         "processors": [["HammingDiversityLogitsProcessor", [1.5, 4, 2]]],
         "scorer": {"batch_size": 3, "num_beams": 4, "num_beam_groups": 2, "num_beam_hyps_to_keep": 2},
         "kwargs": common},
    ]


def main(out_dir: str) -> None:
    for family in ("gpt2", "llama"):
        model = build(family)
        folder = os.path.join(out_dir, family)
        model.save_pretrained(folder, safe_serialization=True)
        ids, mask = batch()
        with torch.no_grad():
            probe = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0,
                                   eos_token_id=None, num_beams=4)
        eos = int(probe[1, ids.shape[1] + 2])  # a token the beams actually meet, so EOS handling is exercised
        records, arrays = [], {}
        for case in cases(eos):
            with torch.no_grad():
                out = run_case(model, case, ids.clone(), mask.clone())
            rec = {**case, "expected": {"sequences": out.sequences.tolist()}}
            if getattr(out, "sequences_scores", None) is not None:
                rec["expected"]["sequences_scores"] = out.sequences_scores.tolist()
            if getattr(out, "beam_indices", None) is not None:
                rec["expected"]["beam_indices"] = out.beam_indices.tolist()
            arrays[case["id"]] = torch.stack(out.scores).numpy()
            records.append(rec)
        meta = {"transformers": transformers.__version__, "torch": torch.__version__, "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(), "eos_token_id": eos, "cases": records}
        with open(os.path.join(folder, "cases.json"), "w") as f:
            json.dump(meta, f, indent=1)
        np.savez_compressed(os.path.join(folder, "scores.npz"), **arrays)
        print(family, "eos", eos, [r["id"] for r in records])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/assets/golden440")
