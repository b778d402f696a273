"""TFAutoModel / TFAutoModelForCausalLM / TFAutoModelForSeq2SeqLM: the TF class for a checkpoint's model_type.

The same rules as `pyengine.auto` (config first, kwargs naming config attributes override it, then the
class's `from_pretrained`), over a literal table of TF classes. Imports TensorFlow only when a class is used.

Example:
    >>> model = TFAutoModelForCausalLM.from_pretrained("./tiny-gpt2")        # tf_model.h5
    >>> model = TFAutoModelForCausalLM.from_pretrained("./tiny-gpt2", from_pt=True)
"""

from __future__ import annotations

from typing import Any

from pyengine.auto import _BaseAutoModel
from pyengine.configuration_utils import PretrainedConfig
from pyengine.models.registry import import_object

# model_type → {task: TF model class}
TF_MODELS: dict[str, dict[str, str]] = {
    "bert": {"base": "pyengine.models.bert.modeling_tf.TFBertModel"},
    "gpt2": {
        "base": "pyengine.models.gpt2.modeling_tf.TFGPT2Model",
        "causal_lm": "pyengine.models.gpt2.modeling_tf.TFGPT2LMHeadModel",
    },
    "llama": {
        "base": "pyengine.models.llama.modeling_tf.TFLlamaModel",
        "causal_lm": "pyengine.models.llama.modeling_tf.TFLlamaForCausalLM",
    },
    "t5": {"seq2seq_lm": "pyengine.models.t5.modeling_tf.TFT5ForConditionalGeneration"},
}


class _TFAutoModel(_BaseAutoModel):
    @classmethod
    def model_class_for(cls, config: PretrainedConfig) -> Any:
        model_type = getattr(config, "model_type", None)
        classes = TF_MODELS.get(model_type)
        if classes is None or cls._task not in classes:
            supported = sorted(t for t, c in TF_MODELS.items() if cls._task in c)
            raise ValueError(f"{cls.__name__} has no TensorFlow class for model_type {model_type!r}; "
                             f"supported: {', '.join(supported)}.")  # fmt: skip
        return import_object(classes[cls._task])

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs: Any) -> Any:
        """A randomly initialised TF model of the config's type."""
        return cls.model_class_for(config)(config, **kwargs)


class TFAutoModel(_TFAutoModel):
    """The base TF model: `TFGPT2Model`, `TFLlamaModel`, `TFBertModel`."""

    _task = "base"


class TFAutoModelForCausalLM(_TFAutoModel):
    """The TF language-model class: `TFGPT2LMHeadModel`, `TFLlamaForCausalLM`."""

    _task = "causal_lm"


class TFAutoModelForSeq2SeqLM(_TFAutoModel):
    """The TF encoder-decoder class: `TFT5ForConditionalGeneration`."""

    _task = "seq2seq_lm"
