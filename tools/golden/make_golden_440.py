"""Write golden files with transformers 4.40.x for the features transformers 4.57 no longer runs locally.

transformers 4.57 removed the public per-strategy methods (greedy_search, sample, beam_search,
beam_sample, group_beam_search) and moved group beam search to a hub download. 4.40 is the last release
with all of them. Run this in a separate environment:

    python3 -m venv /tmp/venv440
    /tmp/venv440/bin/pip install torch==2.13.0 "transformers==4.40.2" "numpy<2" "huggingface_hub<0.25" safetensors
    /tmp/venv440/bin/python tools/golden/make_golden_440.py tests/assets/golden440
    /tmp/venv440/bin/python tools/golden/make_golden_440.py tests/assets/golden440 --examples

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


if __name__ == "__main__" and "--examples" not in sys.argv:
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/assets/golden440")


# -- the reference document's per-strategy examples, on tiny models instead of hub checkpoints ------------
# The reference (4.6-era) defaults max_length to 20 when no stopping criterion is given; 4.40 would loop
# until EOS, so the calls below pass max_length=20 explicitly to reproduce the reference's behaviour.
T5_ENCODER_IDS = [[13, 71, 29, 5, 88, 140, 7, 33, 1]]


def build_t5():
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=300, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return transformers.T5ForConditionalGeneration(cfg).eval()


def t5_examples(model):
    from transformers import MinLengthLogitsProcessor as MinLen

    enc_ids = torch.tensor(T5_ENCODER_IDS)
    out = {}
    for name, num_beams, groups in (("beam_search", 3, 1), ("beam_sample", 3, 1), ("group_beam_search", 6, 3)):
        input_ids = torch.ones((num_beams, 1), dtype=torch.long) * model.config.decoder_start_token_id
        kwargs = {"encoder_outputs": model.get_encoder()(enc_ids.repeat_interleave(num_beams, dim=0), return_dict=True)}
        scorer = BeamSearchScorer(batch_size=1, max_length=model.config.max_length, num_beams=num_beams, device="cpu",
                                  num_beam_groups=groups)
        procs = [MinLen(5, eos_token_id=model.config.eos_token_id)]
        if groups > 1:
            procs.insert(0, HammingDiversityLogitsProcessor(5.5, num_beams=6, num_beam_groups=3))
        call = {"logits_processor": LogitsProcessorList(procs), "max_length": 20}
        if name == "beam_sample":
            torch.manual_seed(0)
            call["logits_warper"] = LogitsProcessorList([TopKLogitsWarper(50), TemperatureLogitsWarper(0.7)])
        with torch.no_grad():
            out[name] = getattr(model, name)(input_ids, scorer, **call, **kwargs).tolist()
    return out


def gpt2_examples(model):
    eos = model.config.eos_token_id
    input_ids = torch.tensor([[15, 300, 72, 9, 640]])
    out = {}
    with torch.no_grad():
        out["greedy_search"] = model.greedy_search(
            input_ids, logits_processor=LogitsProcessorList([MinLengthLogitsProcessor(15, eos_token_id=eos)]),
            max_length=20, pad_token_id=eos).tolist()
        torch.manual_seed(0)
        out["sample"] = model.sample(
            input_ids, logits_processor=LogitsProcessorList([MinLengthLogitsProcessor(15, eos_token_id=eos)]),
            logits_warper=LogitsProcessorList([TopKLogitsWarper(50), TemperatureLogitsWarper(0.7)]),
            max_length=20, pad_token_id=eos).tolist()
    return {"input_ids": input_ids.tolist(), "outputs": out}


def examples(out_dir: str) -> None:
    t5 = build_t5()
    folder = os.path.join(out_dir, "t5")
    t5.save_pretrained(folder, safe_serialization=True)
    with open(os.path.join(folder, "examples.json"), "w") as f:
        json.dump({"encoder_input_ids": T5_ENCODER_IDS, "outputs": t5_examples(t5)}, f, indent=1)
    gpt2 = transformers.GPT2LMHeadModel.from_pretrained(os.path.join(out_dir, "gpt2")).eval()
    with open(os.path.join(out_dir, "gpt2", "examples.json"), "w") as f:
        json.dump(gpt2_examples(gpt2), f, indent=1)


if __name__ == "__main__" and "--examples" in sys.argv:
    examples(sys.argv[1])
