"""The reference document's generation examples, run on tiny local checkpoints instead of hub names.

generate() examples run live against transformers 4.57. The per-strategy examples (greedy_search,
sample, beam_search, beam_sample, group_beam_search) no longer exist in 4.57: their expected outputs come
from transformers 4.40.2 (tools/golden/make_golden_440.py --examples). The calls below are the
reference's, verbatim apart from model loading and the prompt ids.
"""

from __future__ import annotations

import json
import pathlib

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pyengine import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BeamSearchScorer,
    HammingDiversityLogitsProcessor,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "golden440"


# -- per-strategy examples vs 4.40 golden outputs ----------------------------------------------------------
@pytest.fixture(scope="module")
def t5():
    return AutoModelForSeq2SeqLM.from_pretrained(ASSETS / "t5"), json.loads((ASSETS / "t5" / "examples.json").read_text())


@pytest.mark.parametrize("method", ["beam_search", "beam_sample", "group_beam_search"])
def test_t5_strategy_examples(t5, method):
    model, golden = t5
    encoder_input_ids = torch.tensor(golden["encoder_input_ids"])
    num_beams = 6 if method == "group_beam_search" else 3
    input_ids = torch.ones((num_beams, 1), device=model.device, dtype=torch.long)
    input_ids = input_ids * model.config.decoder_start_token_id
    model_kwargs = {
        "encoder_outputs": model.get_encoder()(encoder_input_ids.repeat_interleave(num_beams, dim=0), return_dict=True)
    }
    beam_scorer = BeamSearchScorer(
        batch_size=1, max_length=model.config.max_length, num_beams=num_beams, device=model.device,
        num_beam_groups=3 if method == "group_beam_search" else 1,
    )
    processors = [MinLengthLogitsProcessor(5, eos_token_id=model.config.eos_token_id)]
    if method == "group_beam_search":
        processors.insert(0, HammingDiversityLogitsProcessor(5.5, num_beams=6, num_beam_groups=3))
    logits_processor = LogitsProcessorList(processors)
    if method == "beam_sample":
        torch.manual_seed(0)
        logits_warper = LogitsProcessorList([TopKLogitsWarper(50), TemperatureLogitsWarper(0.7)])
        outputs = model.beam_sample(
            input_ids, beam_scorer, logits_processor=logits_processor, logits_warper=logits_warper, **model_kwargs
        )
    else:
        outputs = getattr(model, method)(input_ids, beam_scorer, logits_processor=logits_processor, **model_kwargs)
    assert outputs.tolist() == golden["outputs"][method]


def test_gpt2_greedy_and_sample_examples():
    model = AutoModelForCausalLM.from_pretrained(ASSETS / "gpt2")
    golden = json.loads((ASSETS / "gpt2" / "examples.json").read_text())
    model.config.pad_token_id = model.config.eos_token_id
    input_ids = torch.tensor(golden["input_ids"])
    logits_processor = LogitsProcessorList([MinLengthLogitsProcessor(15, eos_token_id=model.config.eos_token_id)])
    outputs = model.greedy_search(input_ids, logits_processor=logits_processor)
    assert outputs.tolist() == golden["outputs"]["greedy_search"]
    logits_warper = LogitsProcessorList([TopKLogitsWarper(50), TemperatureLogitsWarper(0.7)])
    torch.manual_seed(0)
    outputs = model.sample(input_ids, logits_processor=logits_processor, logits_warper=logits_warper)
    assert outputs.tolist() == golden["outputs"]["sample"]


# -- generate() examples vs transformers 4.57, live -----------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_pair():
    hf = transformers.GPT2LMHeadModel.from_pretrained(ASSETS / "gpt2").eval()
    return hf, AutoModelForCausalLM.from_pretrained(ASSETS / "gpt2")


@pytest.fixture(scope="module")
def t5_pair():
    hf = transformers.T5ForConditionalGeneration.from_pretrained(ASSETS / "t5").eval()
    return hf, AutoModelForSeq2SeqLM.from_pretrained(ASSETS / "t5")


DOG = torch.tensor([[464, 329]])  # stands in for tokenizer("The dog")
BAD_WORDS = [[11, 12], [13], [14, 15]]  # stands in for the tokenized "idiot", "stupid", "shut up"
GPT2_EXAMPLES = [
    ("no prompt", {"max_length": 40}, None),
    ("sampling x3", {"input_ids": DOG, "max_length": 20, "num_return_sequences": 3, "do_sample": True}, 0),
    ("repetition penalty", {"input_ids": DOG, "max_length": 20, "repetition_penalty": 1.2}, None),
    ("bad words", {"input_ids": DOG, "max_length": 20, "do_sample": True, "bad_words_ids": BAD_WORDS}, 1),
    ("beam+temperature", {"input_ids": DOG, "num_beams": 5, "num_return_sequences": 3, "temperature": 1.5}, None),
    ("sampling t=0.7", {"input_ids": DOG, "max_length": 40, "temperature": 0.7, "num_return_sequences": 3,
                        "do_sample": True}, 2),
    ("top-k sampling", {"input_ids": DOG, "max_length": 20, "top_k": 30, "do_sample": True}, 3),
]


@pytest.mark.parametrize("name,kwargs,seed", GPT2_EXAMPLES, ids=[e[0] for e in GPT2_EXAMPLES])
def test_gpt2_generate_examples(gpt2_pair, name, kwargs, seed):
    outs = []
    for model in gpt2_pair:
        if seed is not None:
            torch.manual_seed(seed)
        outs.append(model.generate(**kwargs, pad_token_id=2))
    assert torch.equal(outs[0], outs[1]), name


def test_t5_generate_beam_example(t5_pair):
    input_ids = torch.tensor([[21, 8, 140, 7, 66, 91, 3, 1]])
    a, b = (m.generate(input_ids=input_ids, num_beams=5, num_return_sequences=3) for m in t5_pair)
    assert torch.equal(a, b)
