"""pyengine: a compiled-kernel accelerated text-generation engine with the transformers 4.x API.

`import pyengine` imports no framework: every public name below is resolved on first use.

Example:
    >>> from pyengine import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained("path/to/checkpoint")
    >>> model.generate(input_ids, max_new_tokens=20)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (literal table; no import-time side effects)
_LAZY = {
    "PretrainedConfig": "pyengine.configuration_utils",
    "GenerationConfig": "pyengine.generation_config",
    "AutoConfig": "pyengine.auto",
    "AutoModel": "pyengine.auto",
    "AutoModelForCausalLM": "pyengine.auto",
    "AutoModelForSeq2SeqLM": "pyengine.auto",
    "PreTrainedModel": "pyengine.modeling_utils",
    "FlaxPreTrainedModel": "pyengine.modeling_flax_utils",
    "FlaxGenerationMixin": "pyengine.generation.flax_utils",
    "FlaxAutoModel": "pyengine.models.auto_flax",
    "FlaxAutoModelForCausalLM": "pyengine.models.auto_flax",
    "FlaxAutoModelForSeq2SeqLM": "pyengine.models.auto_flax",
    "FlaxBertModel": "pyengine.models.bert.modeling_flax",
    "FlaxGPT2Model": "pyengine.models.gpt2.modeling_flax",
    "FlaxGPT2LMHeadModel": "pyengine.models.gpt2.modeling_flax",
    "FlaxLlamaModel": "pyengine.models.llama.modeling_flax",
    "FlaxLlamaForCausalLM": "pyengine.models.llama.modeling_flax",
    "FlaxT5Model": "pyengine.models.t5.modeling_flax",
    "FlaxT5ForConditionalGeneration": "pyengine.models.t5.modeling_flax",
    "GenerationMixin": "pyengine.generation.utils",
    "PushToHubMixin": "pyengine.hub",
    "BertConfig": "pyengine.models.bert.config",
    "BertModel": "pyengine.models.bert.modeling_torch",
    "GPT2Config": "pyengine.models.gpt2.config",
    "GPT2Model": "pyengine.models.gpt2.modeling_torch",
    "GPT2LMHeadModel": "pyengine.models.gpt2.modeling_torch",
    "LlamaConfig": "pyengine.models.llama.config",
    "LlamaModel": "pyengine.models.llama.modeling_torch",
    "LlamaForCausalLM": "pyengine.models.llama.modeling_torch",
    "T5Config": "pyengine.models.t5.config",
    "T5Model": "pyengine.models.t5.modeling_torch",
    "T5ForConditionalGeneration": "pyengine.models.t5.modeling_torch",
    "T5EncoderModel": "pyengine.models.t5.modeling_torch",
    "Tokenizer": "pyengine.tokenization",
    "BatchGenerator": "pyengine.batch",
    "LogitsProcessor": "pyengine.generation.logits_process",
    "LogitsWarper": "pyengine.generation.logits_process",
    "LogitsProcessorList": "pyengine.generation.logits_process",
    "TemperatureLogitsWarper": "pyengine.generation.logits_process",
    "TopKLogitsWarper": "pyengine.generation.logits_process",
    "TopPLogitsWarper": "pyengine.generation.logits_process",
    "MinPLogitsWarper": "pyengine.generation.logits_process",
    "RepetitionPenaltyLogitsProcessor": "pyengine.generation.logits_process",
    "NoRepeatNGramLogitsProcessor": "pyengine.generation.logits_process",
    "NoBadWordsLogitsProcessor": "pyengine.generation.logits_process",
    "MinLengthLogitsProcessor": "pyengine.generation.logits_process",
    "MinNewTokensLengthLogitsProcessor": "pyengine.generation.logits_process",
    "ForcedBOSTokenLogitsProcessor": "pyengine.generation.logits_process",
    "ForcedEOSTokenLogitsProcessor": "pyengine.generation.logits_process",
    "InfNanRemoveLogitsProcessor": "pyengine.generation.logits_process",
    "HammingDiversityLogitsProcessor": "pyengine.generation.logits_process",
    "EncoderNoRepeatNGramLogitsProcessor": "pyengine.generation.logits_process",
    "EncoderRepetitionPenaltyLogitsProcessor": "pyengine.generation.logits_process",
    "PrefixConstrainedLogitsProcessor": "pyengine.generation.logits_process",
    "BeamScorer": "pyengine.generation.beam_search",
    "BeamSearchScorer": "pyengine.generation.beam_search",
    "GreedySearchDecoderOnlyOutput": "pyengine.engine.outputs",
    "SampleDecoderOnlyOutput": "pyengine.engine.outputs",
    "BeamSearchDecoderOnlyOutput": "pyengine.engine.outputs",
    "BeamSampleDecoderOnlyOutput": "pyengine.engine.outputs",
    "GreedySearchEncoderDecoderOutput": "pyengine.engine.outputs",
    "SampleEncoderDecoderOutput": "pyengine.engine.outputs",
    "BeamSearchEncoderDecoderOutput": "pyengine.engine.outputs",
    "BeamSampleEncoderDecoderOutput": "pyengine.engine.outputs",
    "StoppingCriteria": "pyengine.generation.stopping_criteria",
    "StoppingCriteriaList": "pyengine.generation.stopping_criteria",
    "MaxLengthCriteria": "pyengine.generation.stopping_criteria",
    "MaxTimeCriteria": "pyengine.generation.stopping_criteria",
    "EosTokenCriteria": "pyengine.generation.stopping_criteria",
    "GenerateDecoderOnlyOutput": "pyengine.engine.outputs",
    "GenerateEncoderDecoderOutput": "pyengine.engine.outputs",
    "GenerateBeamDecoderOnlyOutput": "pyengine.engine.outputs",
    "GenerateBeamEncoderDecoderOutput": "pyengine.engine.outputs",
    # TensorFlow (issue 8): imported on first use only
    "TFPreTrainedModel": "pyengine.modeling_tf_utils",
    "TFModelUtilsMixin": "pyengine.modeling_tf_utils",
    "TFGenerationMixin": "pyengine.generation.tf_utils",
    "TFAutoModel": "pyengine.models.auto_tf",
    "TFAutoModelForCausalLM": "pyengine.models.auto_tf",
    "TFAutoModelForSeq2SeqLM": "pyengine.models.auto_tf",
    "TFBertModel": "pyengine.models.bert.modeling_tf",
    "TFGPT2Model": "pyengine.models.gpt2.modeling_tf",
    "TFGPT2LMHeadModel": "pyengine.models.gpt2.modeling_tf",
    "TFLlamaModel": "pyengine.models.llama.modeling_tf",
    "TFLlamaForCausalLM": "pyengine.models.llama.modeling_tf",
    "TFT5ForConditionalGeneration": "pyengine.models.t5.modeling_tf",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyengine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
